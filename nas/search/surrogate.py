"""A surrogate of the proxy: a model fitted on an evaluation table (bench/evaluation_table.py) that answers in
milliseconds what proxy training answers in a minute, so that strategies can be compared over many evaluations
and seeds (bench/search_surrogate.py), as NAS-Bench-301 does for DARTS.

The table holds architectures drawn uniformly from the space, each with its FLOPs, params, training-free scores
and proxy accuracy at seed 0 (some also at seed 1). The surrogate predicts the proxy accuracy from
`architecture_features`; `SurrogateEvaluator` adds noise at the table's own seed-to-seed level, so a strategy
sees what it would see from real training: a ranking that a second seed does not fully repeat. It is for
benchmarks only: a user's search never reads a table.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.evaluation.config import ZERO_COST_SCORES, RewardConfig
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.proxy import ProxyResult
from nas.evaluation.zero_cost import zero_cost_score
from nas.search.predictor import EnsemblePredictor, architecture_features
from nas.search.study import arch_key
from nas.space.search_space import SearchSpace
from nas.space.spec import ArchSpec
from nas.training.config import ProxyConfig
from nas.training.data import TaskData

# Fewer entries than this cannot support a fit that k-fold checks mean anything.
MIN_ENTRIES = 20
SURROGATE_SIZE = 96


class TableError(ValueError):
    """An evaluation table that is missing or malformed; the message is one line for the user."""


@dataclass(frozen=True)
class TableEntry:
    """One architecture of the table: its sample, costs, training-free scores and proxy accuracy per seed."""

    sample: dict[str, Any]
    flops: int
    params: int
    zero_cost: dict[str, float]
    accuracy: dict[int, float]


def _entry(raw: Any, index: int, space: SearchSpace) -> TableEntry:
    where = f"entry {index + 1}"
    if not isinstance(raw, dict):
        raise TableError(f"{where} is not an object")
    for key in ("sample", "flops", "params", "zero_cost", "accuracy"):
        if key not in raw:
            raise TableError(f"{where} has no {key!r}")
    sample, scores, accuracy = raw["sample"], raw["zero_cost"], raw["accuracy"]
    if not isinstance(sample, dict) or not isinstance(scores, dict) or not isinstance(accuracy, dict):
        raise TableError(f"{where}: 'sample', 'zero_cost' and 'accuracy' must be objects")
    for label, values in space.choices():
        if sample.get(label) not in values:
            raise TableError(f"{where}: {label} is {sample.get(label)!r}, not one of the space's {list(values)}")
    missing = [name for name in ZERO_COST_SCORES if not isinstance(scores.get(name), (int, float))]
    if missing:
        raise TableError(f"{where} has no {', '.join(missing)} score")
    try:
        seeds = {int(seed): float(value) for seed, value in accuracy.items()}
        flops, params = int(raw["flops"]), int(raw["params"])
    except (TypeError, ValueError):
        raise TableError(f"{where}: flops, params and accuracies must be numbers") from None
    if 0 not in seeds or not all(0.0 <= value <= 1.0 for value in seeds.values()):
        raise TableError(f"{where} needs a proxy accuracy in [0, 1] at seed 0")
    return TableEntry(dict(sample), flops, params, {name: float(scores[name]) for name in ZERO_COST_SCORES}, seeds)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TableError(f"evaluation table {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"evaluation table {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise TableError(f"evaluation table {path} has no list of 'entries'")
    return raw


def table_search_args(path: Path | str) -> list[str]:
    """The nas.search options of the task the table at `path` was made for; TableError when it names none."""
    path = Path(path)
    search = _read(path).get("setup", {}).get("search")
    if not isinstance(search, str) or not search.startswith("nas.search"):
        raise TableError(f"evaluation table {path} does not say which search it was made for ('setup': 'search')")
    return search.split()[1:]


def load_table(path: Path | str, space: SearchSpace) -> list[TableEntry]:
    """The entries of the evaluation table at `path`, checked against `space`; TableError names what is wrong."""
    path = Path(path)
    entries = [_entry(item, index, space) for index, item in enumerate(_read(path)["entries"])]
    if len(entries) < MIN_ENTRIES:
        raise TableError(f"evaluation table {path} has {len(entries)} entries; a surrogate needs {MIN_ENTRIES}")
    return entries


def entry_features(entry: TableEntry, space: SearchSpace, scores: tuple[str, ...] = ZERO_COST_SCORES) -> list[float]:
    return architecture_features(space.decode(entry.sample), entry.flops, entry.params,
                                 [entry.zero_cost[name] for name in scores])


def seed_pairs(entries: list[TableEntry]) -> list[tuple[float, float]]:
    """(seed 0, seed 1) proxy accuracies of the entries trained twice."""
    return [(entry.accuracy[0], entry.accuracy[1]) for entry in entries if 1 in entry.accuracy]


def seed_noise(entries: list[TableEntry]) -> float:
    """The standard deviation of one proxy evaluation around the architecture's mean: sd(seed 0 - seed 1) / sqrt 2."""
    pairs = seed_pairs(entries)
    if len(pairs) < 2:
        raise TableError(f"the evaluation table has {len(pairs)} entries with a seed-1 accuracy; the noise needs 2")
    return statistics.stdev(a - b for a, b in pairs) / math.sqrt(2)


class Surrogate:
    """An ensemble fitted on the table's proxy accuracy at seed 0 (the seed a search trains with by default)."""

    def __init__(self, entries: list[TableEntry], space: SearchSpace, model: str = "extra-trees",
                 scores: tuple[str, ...] = ZERO_COST_SCORES, seed: int = 0) -> None:
        self.space = space
        self.scores = scores
        features = np.array([entry_features(entry, space, scores) for entry in entries])
        targets = np.array([entry.accuracy[0] for entry in entries])
        self._model = EnsemblePredictor(seed, SURROGATE_SIZE, model).fit(features, targets)

    def predict(self, features: list[float]) -> float:
        mean, _ = self._model.predict(np.array([features]))
        return float(mean[0])


class SurrogateEvaluator(Evaluator):
    """The search's evaluator with the surrogate in place of proxy training: FLOPs, params, the cap and the reward
    are the real ones, and the accuracy is the surrogate's prediction plus Gaussian noise of sd `noise`, drawn from
    (`seed`, the architecture), so the same seed gives the same trials. `predicted` keeps the noise-free
    accuracy of every architecture evaluated, by architecture key."""

    def __init__(self, surrogate: Surrogate, reward_config: RewardConfig, proxy: ProxyConfig, data: TaskData,
                 noise: float, seed: int,
                 score_cache: Callable[[ArchSpec, str], float] | None = None) -> None:
        super().__init__(reward_config, proxy, data)
        self.surrogate = surrogate
        self.noise = noise
        self.seed = seed
        self.predicted: dict[str, float] = {}
        self._score = score_cache or (lambda spec, name: zero_cost_score(name, spec, data))

    def train(self, spec: ArchSpec, on_epoch: Callable[[int, int], None] | None = None,
              promote: Callable[[float], bool] | None = None) -> ProxyResult:
        if promote is not None:
            raise ValueError("the surrogate predicts the full proxy only; it cannot run successive halving")
        flops, params = self.cost(spec)
        scores = [self._score(spec, name) for name in self.surrogate.scores]
        mean = self.surrogate.predict(architecture_features(spec, flops, params, scores))
        self.predicted[arch_key(spec)] = mean
        noise = random.Random(f"{self.seed}:{arch_key(spec)}").gauss(0.0, self.noise)
        return ProxyResult(min(1.0, max(0.0, mean + noise)), 0.0, 0.0, 0.0, self.proxy.epochs)
