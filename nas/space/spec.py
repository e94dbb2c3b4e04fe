"""The architecture spec: the one description of every network in effnas.

Stages hold *base* channels and repeats, as the official TF block strings do; the width and depth multipliers
are applied by the builder through `round_filters` / `round_repeats`, so a scaled family shares its baseline's
stages and differs only in the global multipliers and resolution.

Block strings follow the official TF grammar (`r1_k3_s11_e1_i32_o16_se0.25`, `noskip` to turn the identity
skip off). Two block types beyond MBConv, which the search space needs, carry a leading tag as timm does:
`ds_` for a depthwise-separable conv (MobileNet-V1 style: activation after the pointwise conv) and `cn_` for a
regular conv. Both have no expansion, so their strings carry no `e` token.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

BLOCK_TYPES = ("mbconv", "dsconv", "conv")
_BLOCK_TAGS = {"dsconv": "ds", "conv": "cn"}
_TAG_BLOCKS = {tag: block for block, tag in _BLOCK_TAGS.items()}
SPEC_FORMAT = "effnas.arch/1"
DIVISOR = 8


class SpecError(ValueError):
    """An architecture spec or block string that does not describe a valid network."""


def round_filters(filters: int, width: float, divisor: int = DIVISOR) -> int:
    """Channels after the width multiplier, exactly as the official EfficientNet code rounds them."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Layers of a stage after the depth multiplier, exactly as the official code (ceil)."""
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` identical blocks, the first with `stride` and `in_channels`."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.0
    skip: bool = True
    block: str = "mbconv"

    def __post_init__(self) -> None:
        if self.block not in BLOCK_TYPES:
            raise SpecError(f"unknown block type {self.block!r}; expected one of {', '.join(BLOCK_TYPES)}")
        for name in ("repeats", "kernel", "stride", "expand_ratio", "in_channels", "out_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise SpecError(f"kernel must be odd, got {self.kernel}")
        if self.stride > 2:
            raise SpecError(f"stride must be 1 or 2, got {self.stride}")
        if not 0.0 <= float(self.se_ratio) <= 1.0:
            raise SpecError(f"se_ratio must lie in [0, 1], got {self.se_ratio}")
        if self.block != "mbconv" and self.expand_ratio != 1:
            raise SpecError(f"a {self.block} block has no expansion, got expand_ratio {self.expand_ratio}")
        object.__setattr__(self, "se_ratio", float(self.se_ratio))

    @property
    def skip_possible(self) -> bool:
        """Whether any block of the stage can carry an identity skip (stride 1 and in == out)."""
        return self.repeats > 1 or (self.stride == 1 and self.in_channels == self.out_channels)

    def canonical(self) -> StageSpec:
        """The same network with choices that change nothing normalised (skip where no skip can exist)."""
        return self if self.skip_possible or self.skip else replace(self, skip=True)


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, stages, head and the global multipliers."""

    stages: tuple[StageSpec, ...]
    stem_channels: int = 32
    # 1 keeps four times the feature map for small images: at 32 px, B0's strides leave 1x1 maps before the head.
    stem_stride: int = 2
    head_channels: int = 1280
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_connect: float = 0.2
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise SpecError("an architecture needs at least one stage")
        for name in ("stem_channels", "head_channels", "resolution", "num_classes", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if self.stem_stride not in (1, 2) or isinstance(self.stem_stride, bool):
            raise SpecError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if self.width <= 0 or self.depth <= 0:
            raise SpecError(f"width and depth multipliers must be positive, got {self.width}, {self.depth}")
        for name in ("dropout", "drop_connect"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SpecError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        expected = self.stem_channels
        for index, stage in enumerate(self.stages):
            if stage.in_channels != expected:
                raise SpecError(
                    f"stage {index + 1} takes {stage.in_channels} channels but receives {expected}"
                )
            expected = stage.out_channels
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "depth", float(self.depth))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "drop_connect", float(self.drop_connect))

    def canonical(self) -> ArchSpec:
        """The spec with every stage normalised, so equal networks compare and encode equal."""
        return replace(self, stages=tuple(stage.canonical() for stage in self.stages))

    def block_strings(self) -> list[str]:
        """The stages as (base-channel) block strings."""
        return [encode_stage(stage) for stage in self.stages]

    def arch_key(self) -> str:
        """A canonical text naming the trained network: block strings, stem, head and multipliers."""
        stem = f"stem{self.stem_channels}" + ("" if self.stem_stride == 2 else f"_s{self.stem_stride}")
        return "|".join(
            self.canonical().block_strings()
            + [stem, f"head{self.head_channels}", f"w{self.width:g}", f"d{self.depth:g}"]
        )


def encode_stage(stage: StageSpec) -> str:
    """The official TF block string of a stage (with a `ds_`/`cn_` tag for non-MBConv blocks)."""
    parts = [f"r{stage.repeats}", f"k{stage.kernel}", f"s{stage.stride}{stage.stride}"]
    if stage.block == "mbconv":
        parts.append(f"e{stage.expand_ratio}")
    parts += [f"i{stage.in_channels}", f"o{stage.out_channels}"]
    if stage.se_ratio > 0:
        parts.append(f"se{stage.se_ratio:g}")
    if not stage.skip:
        parts.append("noskip")
    text = "_".join(parts)
    return f"{_BLOCK_TAGS[stage.block]}_{text}" if stage.block in _BLOCK_TAGS else text


_OPTION = re.compile(r"^([a-z]+)(\d[\d.]*)$")


def decode_stage(text: str) -> StageSpec:
    """Parse one block string; raise SpecError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"empty block string {text!r}")
    tokens = text.strip().split("_")
    block = "mbconv"
    if tokens[0] in _TAG_BLOCKS:
        block = _TAG_BLOCKS[tokens.pop(0)]
    options: dict[str, str] = {}
    skip = True
    for token in tokens:
        if token == "noskip":
            skip = False
            continue
        match = _OPTION.match(token)
        if match is None or match.group(1) in options:
            raise SpecError(f"bad token {token!r} in block string {text!r}")
        options[match.group(1)] = match.group(2)
    unknown = set(options) - {"r", "k", "s", "e", "i", "o", "se"}
    if unknown:
        raise SpecError(f"unknown option(s) {', '.join(sorted(unknown))} in block string {text!r}")
    missing = {"r", "k", "s", "i", "o"} - set(options)
    if missing:
        raise SpecError(f"block string {text!r} lacks {', '.join(sorted(missing))}")
    stride = options["s"]
    if len(stride) == 1:
        stride = stride * 2
    if len(stride) != 2 or stride[0] != stride[1] or not stride.isdigit():
        raise SpecError(f"stride {options['s']!r} in {text!r} must be the same in both axes (s11 or s22)")
    try:
        return StageSpec(
            repeats=int(options["r"]),
            kernel=int(options["k"]),
            stride=int(stride[0]),
            expand_ratio=int(options.get("e", "1")),
            in_channels=int(options["i"]),
            out_channels=int(options["o"]),
            se_ratio=float(options.get("se", "0")),
            skip=skip,
            block=block,
        )
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise SpecError(f"{exc} (in block string {text!r})") from None
        raise SpecError(f"bad number in block string {text!r}") from None


_GLOBAL_FIELDS = tuple(f for f in ArchSpec.__dataclass_fields__ if f != "stages")


def decode(block_strings: list[str] | tuple[str, ...], **global_params: Any) -> ArchSpec:
    """A spec from block strings plus global parameters (stem/head channels, multipliers, ...)."""
    unknown = set(global_params) - set(_GLOBAL_FIELDS)
    if unknown:
        raise SpecError(f"unknown architecture field(s): {', '.join(sorted(unknown))}")
    return ArchSpec(stages=tuple(decode_stage(s) for s in block_strings), **global_params)


def spec_to_dict(spec: ArchSpec) -> dict[str, Any]:
    """The JSON-ready form: format tag, block strings and global parameters."""
    data = {key: value for key, value in asdict(spec).items() if key != "stages"}
    return {"format": SPEC_FORMAT, "blocks": spec.block_strings(), **data}


def spec_from_dict(data: dict[str, Any]) -> ArchSpec:
    """Inverse of `spec_to_dict`; raises SpecError on anything it cannot read."""
    if not isinstance(data, dict):
        raise SpecError("an architecture must be a JSON object")
    if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
        raise SpecError(f"unsupported architecture format {data.get('format')!r}; expected {SPEC_FORMAT!r}")
    blocks = data.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise SpecError("an architecture needs a non-empty list 'blocks' of block strings")
    params = {key: value for key, value in data.items() if key not in ("format", "blocks")}
    try:
        return decode(blocks, **params)
    except TypeError as exc:
        raise SpecError(f"bad architecture field: {exc}") from None


def to_json(spec: ArchSpec, indent: int | None = 2) -> str:
    return json.dumps(spec_to_dict(spec), indent=indent)


def from_json(text: str) -> ArchSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return spec_from_dict(data)


B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)


@dataclass(frozen=True)
class Coefficients:
    """One row of the official per-model table."""

    width: float
    depth: float
    resolution: int
    dropout: float


OFFICIAL_COEFFICIENTS: dict[str, Coefficients] = {
    "efficientnet-b0": Coefficients(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": Coefficients(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": Coefficients(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": Coefficients(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": Coefficients(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": Coefficients(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": Coefficients(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": Coefficients(2.0, 3.1, 600, 0.5),
}


def named_spec(name: str, num_classes: int = 1000, in_channels: int = 3) -> ArchSpec:
    """An official EfficientNet by name (`efficientnet-b0` .. `efficientnet-b7`)."""
    key = name.strip().lower().replace("_", "-")
    if key not in OFFICIAL_COEFFICIENTS:
        raise SpecError(f"unknown architecture name {name!r}; known: {', '.join(OFFICIAL_COEFFICIENTS)}")
    row = OFFICIAL_COEFFICIENTS[key]
    return decode(
        B0_BLOCKS,
        width=row.width,
        depth=row.depth,
        resolution=row.resolution,
        dropout=row.dropout,
        num_classes=num_classes,
        in_channels=in_channels,
    )


def efficientnet_b0(num_classes: int = 1000, in_channels: int = 3) -> ArchSpec:
    return named_spec("efficientnet-b0", num_classes=num_classes, in_channels=in_channels)


__all__ = [
    "ArchSpec",
    "B0_BLOCKS",
    "BLOCK_TYPES",
    "Coefficients",
    "OFFICIAL_COEFFICIENTS",
    "SpecError",
    "StageSpec",
    "decode",
    "decode_stage",
    "efficientnet_b0",
    "encode_stage",
    "from_json",
    "named_spec",
    "round_filters",
    "round_repeats",
    "spec_from_dict",
    "spec_to_dict",
    "to_json",
]
