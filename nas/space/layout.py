"""From spec to layout: the single place where multipliers, rounding, strides, skips, squeeze widths, the
stochastic-depth schedule and feature-map sizes are decided.

The builder (`nas.space.builder`) turns a layout into modules and the analytic counters (`nas.space.flops`) read
it, so the two can never disagree about what the network is.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.space.spec import ArchSpec, SpecError, round_filters, round_repeats

STEM_KERNEL = 3
MIN_RESOLUTION = 32


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a conv with 'same'-style padding kernel // 2 (equal to TF's ceil(size / stride))."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class BlockLayout:
    """One concrete block: everything needed to build it or count it."""

    block: str
    in_channels: int
    out_channels: int
    mid_channels: int
    kernel: int
    stride: int
    se_channels: int
    skip: bool
    drop_path: float
    in_size: int
    out_size: int


@dataclass(frozen=True)
class NetworkLayout:
    """A whole network resolved at one input resolution."""

    in_channels: int
    resolution: int
    stem_channels: int
    stem_stride: int
    stem_size: int
    stages: tuple[tuple[BlockLayout, ...], ...]
    head_in: int
    head_channels: int
    head_size: int
    num_classes: int
    dropout: float

    @property
    def blocks(self) -> tuple[BlockLayout, ...]:
        return tuple(block for stage in self.stages for block in stage)


def network_layout(spec: ArchSpec, resolution: int | None = None) -> NetworkLayout:
    """Resolve `spec` at `resolution` (default: the spec's own)."""
    size = spec.resolution if resolution is None else resolution
    if size < MIN_RESOLUTION:
        raise SpecError(f"input resolution must be at least {MIN_RESOLUTION}, got {size}")
    stem = round_filters(spec.stem_channels, spec.width)
    size = conv_output_size(size, STEM_KERNEL, spec.stem_stride)
    stem_size = size
    repeats = [round_repeats(stage.repeats, spec.depth) for stage in spec.stages]
    total = sum(repeats)
    index = 0
    channels = stem
    stages = []
    for stage, count in zip(spec.stages, repeats):
        out = round_filters(stage.out_channels, spec.width)
        blocks = []
        for layer in range(count):
            stride = stage.stride if layer == 0 else 1
            mid = channels * stage.expand_ratio
            out_size = conv_output_size(size, stage.kernel, stride)
            # The last block gets the full drop-connect rate, the first none (the paper's linear schedule).
            rate = spec.drop_connect * index / (total - 1) if total > 1 else 0.0
            blocks.append(
                BlockLayout(
                    block=stage.block,
                    in_channels=channels,
                    out_channels=out,
                    mid_channels=mid,
                    kernel=stage.kernel,
                    stride=stride,
                    se_channels=max(1, int(channels * stage.se_ratio)) if stage.se_ratio > 0 else 0,
                    skip=stage.skip and stride == 1 and channels == out,
                    drop_path=rate,
                    in_size=size,
                    out_size=out_size,
                )
            )
            channels, size = out, out_size
            index += 1
        stages.append(tuple(blocks))
    return NetworkLayout(
        in_channels=spec.in_channels,
        resolution=spec.resolution if resolution is None else resolution,
        stem_channels=stem,
        stem_stride=spec.stem_stride,
        stem_size=stem_size,
        stages=tuple(stages),
        head_in=channels,
        head_channels=round_filters(spec.head_channels, spec.width),
        head_size=size,
        num_classes=spec.num_classes,
        dropout=spec.dropout,
    )
