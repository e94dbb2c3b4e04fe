"""MnasNet's factorized hierarchical search space on EfficientNet-B0's seven stages (no NNI here).

Per stage: block type, kernel, SE ratio, skip, output channels (a factor of B0's, rounded to a multiple of 8)
and layers (B0's -1, 0, +1, at least 1). Strides, stem and head are B0's, except that a task of small images
may set the stem's stride to 1. A sample is a plain dict from
labels such as `stage3_kernel` to values; `decode` turns it into the foundation's `ArchSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from nas.space.layout import network_layout
from nas.space.spec import ArchSpec, StageSpec, efficientnet_b0

BLOCK_CHOICES: dict[str, tuple[str, int]] = {
    "mbconv_e1": ("mbconv", 1),
    "mbconv_e3": ("mbconv", 3),
    "mbconv_e6": ("mbconv", 6),
    "dsconv": ("dsconv", 1),
    "conv": ("conv", 1),
}
DIMENSIONS: dict[str, tuple[Any, ...]] = {
    "block": tuple(BLOCK_CHOICES),
    "kernel": (3, 5),
    "se": (0.0, 0.25),
    "skip": ("identity", "none"),
    "width": (0.75, 1.0, 1.25),
    "layers": (-1, 0, 1),
}
CHANNEL_DIVISOR = 8


class SpaceError(ValueError):
    """A search-space restriction that names an unknown dimension or value."""


def stage_channels(base: int, factor: float) -> int:
    """Output channels of a stage: factor x B0's, to the nearest multiple of 8 (halves up), at least 8."""
    return max(CHANNEL_DIVISOR, int(base * factor / CHANNEL_DIVISOR + 0.5) * CHANNEL_DIVISOR)


# The smallest map, in pixels per side, that B0's stride-2 stem may leave before the head; under it the stem
# goes to stride 1 (bench/stem_stride.py measures what each stride gives at 32 and 64 px).
MIN_HEAD_MAP = 2


def head_map_size(resolution: int, stem_stride: int) -> int:
    """Pixels per side of B0's last feature map at `resolution` with this stem stride."""
    return network_layout(replace(efficientnet_b0(), resolution=resolution, stem_stride=stem_stride)).head_size


def auto_stem_stride(resolution: int) -> tuple[int, str]:
    """The stem stride for networks deployed at `resolution`, and why: 1 where B0's downsampling with its
    stride-2 stem would leave a map under MIN_HEAD_MAP x MIN_HEAD_MAP before the head, else B0's 2."""
    size = head_map_size(resolution, 2)
    if size < MIN_HEAD_MAP:
        kept = head_map_size(resolution, 1)
        return 1, f"at {resolution} px B0's stride-2 stem would leave {size}x{size} before the head, stride 1 {kept}x{kept}"
    return 2, f"at {resolution} px B0's stride-2 stem leaves {size}x{size} before the head"


def parse_fixed(items: list[str]) -> dict[str, Any]:
    """`['block=mbconv_e6', 'kernel=3']` -> values pinned for every stage; SpaceError names what is wrong."""
    fixed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in DIMENSIONS:
            raise SpaceError(f"--fix takes DIMENSION=VALUE with DIMENSION one of {', '.join(DIMENSIONS)}, got {item!r}")
        choices = DIMENSIONS[key]
        match = [value for value in choices if str(value) == text.strip() or _same_number(value, text)]
        if not match:
            raise SpaceError(f"--fix {key} must be one of {', '.join(map(str, choices))}, got {text.strip()!r}")
        fixed[key] = match[0]
    return fixed


def _same_number(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return False
    try:
        return float(text) == float(value)
    except ValueError:
        return False


@dataclass(frozen=True)
class SearchSpace:
    """The space for one task: what it searches over and the fixed facts of the task."""

    num_classes: int
    in_channels: int
    resolution: int = 224
    fixed: dict[str, Any] = field(default_factory=dict)
    stem_stride: int = 2
    base: ArchSpec = field(default_factory=efficientnet_b0)

    def choices(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(label, values) per stage and dimension, in a stable order; pinned dimensions have one value."""
        out = []
        for index in range(len(self.base.stages)):
            for dim, values in DIMENSIONS.items():
                out.append((f"stage{index + 1}_{dim}", (self.fixed[dim],) if dim in self.fixed else values))
        return out

    def size(self) -> int:
        return math.prod(len(values) for _, values in self.choices())

    def decode(self, sample: dict[str, Any]) -> ArchSpec:
        """The canonical architecture a sample describes."""
        channels = self.base.stem_channels
        stages = []
        for index, ref in enumerate(self.base.stages):
            get = lambda dim: sample[f"stage{index + 1}_{dim}"]  # noqa: E731
            block, expand = BLOCK_CHOICES[get("block")]
            out = stage_channels(ref.out_channels, get("width"))
            stages.append(
                StageSpec(
                    repeats=max(1, ref.repeats + get("layers")),
                    kernel=get("kernel"),
                    stride=ref.stride,
                    expand_ratio=expand,
                    in_channels=channels,
                    out_channels=out,
                    se_ratio=get("se"),
                    skip=get("skip") == "identity",
                    block=block,
                )
            )
            channels = out
        return ArchSpec(
            stages=tuple(stages),
            stem_channels=self.base.stem_channels,
            stem_stride=self.stem_stride,
            head_channels=self.base.head_channels,
            resolution=self.resolution,
            dropout=self.base.dropout,
            drop_connect=self.base.drop_connect,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        ).canonical()

    def b0_sample(self) -> dict[str, Any]:
        """The choices that make EfficientNet-B0."""
        sample: dict[str, Any] = {}
        for index, ref in enumerate(self.base.stages):
            prefix = f"stage{index + 1}_"
            sample[prefix + "block"] = f"mbconv_e{ref.expand_ratio}"
            sample[prefix + "kernel"] = ref.kernel
            sample[prefix + "se"] = ref.se_ratio
            sample[prefix + "skip"] = "identity" if ref.skip else "none"
            sample[prefix + "width"] = 1.0
            sample[prefix + "layers"] = 0
        return sample

    def reference_spec(self) -> ArchSpec:
        """EfficientNet-B0 for this task (its classes and input channels)."""
        return self.decode(self.b0_sample())
