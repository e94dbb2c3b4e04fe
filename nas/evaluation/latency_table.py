"""Predicted latency, FBNet-style: each distinct part of a network (the stem, every block configuration, the head)
is measured once under a protocol and stored; a network's latency is a linear fit, on whole networks of the same
space, of the sum of its parts' and of its parameters. The fit absorbs what parts timed alone miss: the framework's
per-call overhead, and the weights, which a part timed in a loop keeps in cache and a network reads afresh (on
bench/latency.py's 404 networks the parameter term lifts the share predicted within 10 % from 73 % to 89 %).

A part is identified by everything that sets its cost: type, kernel, expansion (its middle width), input and output
channels, stride, input size, squeeze width and skip. Stored in the database, the table serves every later search
on the same protocol; without a database it lives as long as the object.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from db.latency import load_latencies, store_latency
from db.session import Database
from effnas.records import Latency
from nas.evaluation.latency import REFERENCE_WINDOWS, LatencyProtocol, measure_latency, reference_speed
from nas.space.blocks import ConvBnAct
from nas.space.builder import EfficientNet, build_block
from nas.space.flops import layout_params
from nas.space.layout import STEM_KERNEL, BlockLayout, NetworkLayout, network_layout
from nas.space.search_space import SearchSpace

# Whole networks of the space measured to fit the line; each costs about 12 s the first time (eager, 2-core CPU).
# On bench/latency.py's table, fits on 12 random networks predicted 95 % of the rest within 10 % on average, but
# 87 % at worst over 50 draws; 24 raise the worst case.
CALIBRATION_NETWORKS = 24
CALIBRATION_SEED = 20261203
REFERENCE_ITEM = "reference"


@dataclass(frozen=True)
class Part:
    """One measurable part of a network: its table key, how to build it and the shape it takes."""

    item: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


def stored_reference_speed(protocol: LatencyProtocol, db: Database) -> float:
    """The reference network's latency (ms) under `protocol` as stored in `db`, measured and stored by the first
    process that asks. The reference runs at batch 1 whatever the protocol's batch, so it is stored under the
    batch-1 protocol: the scale a batch-1 latency table shares.

    Measured afresh in each process, the reference's fast end moves with the machine's load at that moment (by
    up to 29 % across five processes here) and carries every figure scaled to it along; the ratio of a network
    to the reference moves by about 2 % (bench/latency.py's noise part)."""
    batch_1 = replace(protocol, batch=1)
    stored = load_latencies(db, batch_1.key(), REFERENCE_ITEM).get(REFERENCE_ITEM)
    if stored is None:
        stored = store_latency(db, batch_1.key(), batch_1.environment(), REFERENCE_ITEM, _reference_latency(protocol))
    return stored.median_ms


def _reference_latency(protocol: LatencyProtocol) -> Latency:
    return Latency(reference_speed(protocol), 0.0, REFERENCE_WINDOWS, 32)


def block_item(block: BlockLayout) -> str:
    return (f"block {block.block} k{block.kernel} s{block.stride} i{block.in_channels} o{block.out_channels} "
            f"m{block.mid_channels} se{block.se_channels} skip{int(block.skip)} @{block.in_size}")


def _head(layout: NetworkLayout) -> nn.Module:
    return nn.Sequential(ConvBnAct(layout.head_in, layout.head_channels, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                         nn.Linear(layout.head_channels, layout.num_classes))


def network_parts(layout: NetworkLayout) -> list[Part]:
    """The stem, the blocks and the head of a network, each a part of the table."""
    stem = Part(f"stem i{layout.in_channels} o{layout.stem_channels} s{layout.stem_stride} @{layout.resolution}",
                lambda: ConvBnAct(layout.in_channels, layout.stem_channels, STEM_KERNEL, layout.stem_stride),
                (1, layout.in_channels, layout.resolution, layout.resolution))
    blocks = [Part(block_item(block), lambda block=block: build_block(block),
                   (1, block.in_channels, block.in_size, block.in_size)) for block in layout.blocks]
    head = Part(f"head i{layout.head_in} o{layout.head_channels} c{layout.num_classes} @{layout.head_size}",
                lambda: _head(layout), (1, layout.head_in, layout.head_size, layout.head_size))
    return [stem, *blocks, head]


def network_item(layout: NetworkLayout) -> str:
    """The table key of a whole network: its parts, in order."""
    parts = "|".join(part.item for part in network_parts(layout))
    return "network " + hashlib.sha256(parts.encode()).hexdigest()[:24]


def features(parts_ms: float, layout: NetworkLayout) -> list[float]:
    """What the fit weighs: 1, the parts' summed latency (ms), the parameters (millions)."""
    return [1.0, parts_ms, layout_params(layout) / 1e6]


def fit(rows: list[list[float]], measured: list[float]) -> list[float]:
    """Least-squares coefficients of measured latency on `features` rows: the plain sum (0, 1, 0) below as many
    networks as coefficients."""
    if not rows or len(rows) < len(rows[0]):
        return [0.0, 1.0, 0.0]
    return [float(c) for c in np.linalg.lstsq(np.array(rows), np.array(measured), rcond=None)[0]]


class LatencyTable:
    """The latency table of one protocol, read from and written to `db` when one is given."""

    def __init__(self, protocol: LatencyProtocol, db: Database | None = None) -> None:
        protocol.check()
        self.protocol = protocol
        self.db = db
        self.key = protocol.key()
        self.environment = protocol.environment()
        self.figures: dict[str, Latency] = load_latencies(db, self.key) if db is not None else {}
        self.coefficients = [0.0, 1.0, 0.0]
        self.measured_now = 0
        # The table's one scale: every figure in it is relative to this speed of the reference network, so the
        # parts and the networks they predict compare whenever each was measured.
        self.reference_ms = self._store(REFERENCE_ITEM, lambda: _reference_latency(protocol)).median_ms

    def _figure(self, item: str, build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> Latency:
        if item not in self.figures:
            self.measured_now += 1
        return self._store(item, lambda: measure_latency(build(), input_shape, self.protocol, self.reference_ms))

    def _store(self, item: str, measure: Callable[[], Latency]) -> Latency:
        if item not in self.figures:
            latency = measure()
            # A racing writer's figure wins in the database: the table keeps the one stored.
            self.figures[item] = (latency if self.db is None
                                  else store_latency(self.db, self.key, self.environment, item, latency))
        return self.figures[item]

    def parts_sum(self, layout: NetworkLayout) -> float:
        """The sum of the network's parts' latencies (ms), measuring the parts not yet in the table."""
        return sum(self._figure(part.item, part.build, part.input_shape).median_ms
                   for part in network_parts(layout))

    def measure(self, layout: NetworkLayout) -> Latency:
        """The whole network's measured latency, from the table when it was measured before."""
        shape = (1, layout.in_channels, layout.resolution, layout.resolution)
        return self._figure(network_item(layout), lambda: EfficientNet(layout), shape)

    def calibrate(self, layouts: Iterable[NetworkLayout]) -> None:
        """Fit the coefficients on whole networks (measured once, then read from the table)."""
        layouts = list(layouts)
        measured = [self.measure(layout).median_ms for layout in layouts]
        self.coefficients = fit([features(self.parts_sum(layout), layout) for layout in layouts], measured)

    def predict(self, layout: NetworkLayout) -> float:
        """The network's predicted latency in ms."""
        terms = features(self.parts_sum(layout), layout)
        return max(0.0, sum(c * x for c, x in zip(self.coefficients, terms)))

    def describe_fit(self) -> str:
        intercept, per_part, per_million = self.coefficients
        return (f"predicted = {intercept:.3f} ms + {per_part:.3f} x the parts' sum + {per_million:.3f} ms per million "
                "parameters")


def calibration_layouts(space: SearchSpace, count: int = CALIBRATION_NETWORKS,
                        seed: int = CALIBRATION_SEED) -> list[NetworkLayout]:
    """Networks drawn uniformly from the space in a fixed order, the space's reference network first: the same
    ones for every search on the same space, so their measurements are reused."""
    rng = random.Random(seed)
    choices = space.choices()
    samples = [space.b0_sample(), *({label: rng.choice(values) for label, values in choices}
                                    for _ in range(count - 1))]
    return [network_layout(space.decode(sample)) for sample in samples]
