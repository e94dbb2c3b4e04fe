"""A supernet of a whole search space: one set of weights of which every architecture the space decodes is a path
(single-path one-shot, with Once-for-All's weight sharing).

A path is the network's layout (`nas.space.layout`), so the supernet and the builder read the same description.
Shared where shapes allow: a 3x3 kernel is the centre of the 5x5 one (optionally through OFA's learned 9x9
transform), the expansion ratios 3 and 6 and the output-channel choices are leading channel slices, fewer layers
leave a stage's last layers out, and SE and the identity skip are switched per path. Block types whose operations
differ (MBConv with an expansion, MBConv without one, the depthwise-separable and the regular conv) keep their own
weights. `extract` builds a path as a standalone network with the one builder and copies its weights out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.space.blocks import BN_EPS, BN_MOMENTUM, ConvBnAct
from nas.space.builder import EfficientNet, build_model
from nas.space.flops import count_flops
from nas.space.layout import STEM_KERNEL, BlockLayout, NetworkLayout, network_layout
from nas.space.search_space import BLOCK_CHOICES, SearchSpace, stage_channels
from nas.space.spec import ArchSpec, SpecError

MAX_KERNEL = 5
MAX_EXPANSION = max(expand for _, expand in BLOCK_CHOICES.values())
SE_RATIO = 0.25
Tensors = dict[str, torch.Tensor]


def block_kind(block: BlockLayout) -> str:
    """Which weights a block takes: MBConv with an expansion layer, MBConv without one (ratio 1), or its type."""
    if block.block == "mbconv":
        return "mbconv" if block.mid_channels != block.in_channels else "mbconv_e1"
    return block.block


class SharedConvBn(nn.Module):
    """A conv and its BatchNorm at their largest shape (SiLU after, unless `act` is False). A path takes the
    leading output and input channels and the kernel's centre; the state it yields has `ConvBnAct`'s keys."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, depthwise: bool = False,
                 act: bool = True, transform: bool = False) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.act = act
        self.weight = nn.Parameter(torch.empty(out_channels, 1 if depthwise else in_channels, kernel, kernel))
        fan_out = kernel * kernel * (1 if depthwise else out_channels)
        nn.init.normal_(self.weight, 0.0, (2.0 / fan_out) ** 0.5)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        # OFA's kernel transformation: the 3x3 kernel is the 5x5 centre times a learned 9x9 matrix, shared by the
        # channels, which lets the small kernel differ from the centre of the large one.
        self.transform = nn.Parameter(torch.eye(9)) if transform and kernel == MAX_KERNEL else None

    def kernel(self, out_channels: int, in_channels: int, kernel: int) -> torch.Tensor:
        weight = self.weight[:out_channels, : 1 if self.depthwise else in_channels]
        size = self.weight.shape[-1]
        if kernel == size:
            return weight
        start = (size - kernel) // 2
        weight = weight[:, :, start:start + kernel, start:start + kernel]
        if self.transform is None:
            return weight
        flat = weight.reshape(-1, kernel * kernel) @ self.transform
        return flat.reshape(weight.shape)

    def forward(self, x: torch.Tensor, out: int, kernel: int = 1, stride: int = 1) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.kernel(out, channels, kernel)
        x = F.conv2d(x, weight, None, stride, kernel // 2, 1, channels if self.depthwise else 1)
        bn = self.bn
        momentum = bn.momentum
        if self.training and momentum is None:
            # As nn.BatchNorm2d does: no momentum means an exact average over the batches since the last reset.
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked)
        x = F.batch_norm(x, bn.running_mean[:out], bn.running_var[:out], bn.weight[:out], bn.bias[:out],
                         self.training, momentum, bn.eps)
        return F.silu(x) if self.act else x

    def state_for(self, in_channels: int, out: int, kernel: int = 1, stride: int = 1) -> Tensors:
        bn = self.bn
        return {"0.weight": self.kernel(out, in_channels, kernel), "1.weight": bn.weight[:out],
                "1.bias": bn.bias[:out], "1.running_mean": bn.running_mean[:out],
                "1.running_var": bn.running_var[:out], "1.num_batches_tracked": bn.num_batches_tracked}


class SharedSqueezeExcite(nn.Module):
    """Squeeze-and-excitation at its largest shape; a path takes the leading channels and squeeze width."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, se_channels, 1)
        self.expand = nn.Conv2d(se_channels, channels, 1)

    def _weights(self, channels: int, se: int) -> tuple[torch.Tensor, ...]:
        return (self.reduce.weight[:se, :channels], self.reduce.bias[:se], self.expand.weight[:channels, :se],
                self.expand.bias[:channels])

    def forward(self, x: torch.Tensor, se: int) -> torch.Tensor:
        reduce_w, reduce_b, expand_w, expand_b = self._weights(x.shape[1], se)
        squeezed = F.silu(F.conv2d(x.mean((2, 3), keepdim=True), reduce_w, reduce_b))
        return x * torch.sigmoid(F.conv2d(squeezed, expand_w, expand_b))

    def state_for(self, in_channels: int, se: int) -> Tensors:
        return dict(zip(("reduce.weight", "reduce.bias", "expand.weight", "expand.bias"),
                        self._weights(in_channels, se)))


def _se_width(channels: int) -> int:
    return max(1, int(channels * SE_RATIO))


class SharedBlock(nn.Module):
    """One block type's weights for one layer position, at the largest input and output channels there. Its
    operations, in the builder's order and with its module names, come from `operations`."""

    def __init__(self, kind: str, max_in: int, max_out: int, transform: bool) -> None:
        super().__init__()
        self.kind = kind
        mid = max_in * (MAX_EXPANSION if kind == "mbconv" else 1)
        if kind == "mbconv":
            self.expand = SharedConvBn(max_in, mid, 1)
        if kind != "conv":
            self.depthwise = SharedConvBn(mid, mid, MAX_KERNEL, depthwise=True, transform=transform)
            self.se = SharedSqueezeExcite(mid, _se_width(max_in))
        if kind in ("mbconv", "mbconv_e1"):
            self.project = SharedConvBn(mid, max_out, 1, act=False)
        elif kind == "dsconv":
            self.pointwise = SharedConvBn(mid, max_out, 1)
        else:
            self.conv = SharedConvBn(max_in, max_out, MAX_KERNEL, transform=transform)
            self.se = SharedSqueezeExcite(max_out, _se_width(max_in))

    def operations(self, b: BlockLayout) -> list[tuple[str, dict[str, int]]]:
        """(module name, arguments) in order; SE only where the path has it."""
        se = [("se", {"se": b.se_channels})] if b.se_channels else []
        if self.kind == "conv":
            return [("conv", {"out": b.out_channels, "kernel": b.kernel, "stride": b.stride}), *se]
        depthwise = ("depthwise", {"out": b.mid_channels, "kernel": b.kernel, "stride": b.stride})
        expand = [("expand", {"out": b.mid_channels})] if self.kind == "mbconv" else []
        last = "pointwise" if self.kind == "dsconv" else "project"
        return [*expand, depthwise, *se, (last, {"out": b.out_channels})]

    def forward(self, x: torch.Tensor, b: BlockLayout) -> torch.Tensor:
        out = x
        for name, arguments in self.operations(b):
            out = getattr(self, name)(out, **arguments)
        return x + out if b.skip else out

    def state_for(self, b: BlockLayout) -> Tensors:
        state: Tensors = {}
        channels = b.in_channels
        for name, arguments in self.operations(b):
            part = getattr(self, name).state_for(channels, **arguments)
            state.update({f"{name}.{key}": value for key, value in part.items()})
            channels = arguments.get("out", channels)
        return state


class SharedLayer(nn.Module):
    """One layer position of a stage: the weights of each block type there."""

    def __init__(self, kinds: tuple[str, ...], max_in: int, max_out: int, transform: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({kind: SharedBlock(kind, max_in, max_out, transform) for kind in kinds})

    def forward(self, x: torch.Tensor, b: BlockLayout) -> torch.Tensor:
        return self.blocks[block_kind(b)](x, b)


@dataclass(frozen=True)
class SupernetShape:
    """The largest channels and layers per stage, and the block kinds, that the space allows."""

    max_channels: tuple[int, ...]
    max_layers: tuple[int, ...]
    kinds: tuple[str, ...]


def supernet_shape(space: SearchSpace) -> SupernetShape:
    choices = dict(space.choices())
    channels, layers, kinds = [], [], set()
    for index, ref in enumerate(space.base.stages):
        prefix = f"stage{index + 1}_"
        channels.append(max(stage_channels(ref.out_channels, w) for w in choices[prefix + "width"]))
        layers.append(max(1, ref.repeats + max(choices[prefix + "layers"])))
        for name in choices[prefix + "block"]:
            block, expand = BLOCK_CHOICES[name]
            kinds.add("mbconv_e1" if block == "mbconv" and expand == 1 else block)
    return SupernetShape(tuple(channels), tuple(layers), tuple(sorted(kinds)))


class Supernet(nn.Module):
    """Every architecture of `space` as a path: the fixed stem and classifier, a `SharedLayer` per stage and layer
    position, and the head's 1x1 conv over the leading channels of the last stage's output."""

    def __init__(self, space: SearchSpace, kernel_transform: bool = False) -> None:
        super().__init__()
        self.space = space
        self.shape = supernet_shape(space)
        base = space.reference_spec()
        self.stem = ConvBnAct(space.in_channels, base.stem_channels, STEM_KERNEL, space.stem_stride)
        stages, max_in = [], base.stem_channels
        for max_out, count in zip(self.shape.max_channels, self.shape.max_layers):
            stages.append(nn.ModuleList(
                SharedLayer(self.shape.kinds, max_in if layer == 0 else max_out, max_out, kernel_transform)
                for layer in range(count)))
            max_in = max_out
        self.stages = nn.ModuleList(stages)
        self.head = SharedConvBn(max_in, base.head_channels, 1)
        # Zero logits at the start, as final training starts: the official uniform init makes ten-class logits so
        # large that the first epoch of the teacher is spent shrinking them (its loss starts above 5).
        self.classifier = nn.Linear(base.head_channels, space.num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def path(self, spec: ArchSpec) -> NetworkLayout:
        """The layout of `spec` as a path through this supernet; SpecError when it is not one."""
        space = self.space
        if (spec.stem_stride, spec.num_classes, spec.in_channels) != (space.stem_stride, space.num_classes,
                                                                        space.in_channels):
            raise SpecError("the architecture's stem stride, classes or input channels differ from the supernet's")
        if spec.width != 1.0 or spec.depth != 1.0 or len(spec.stages) != len(self.stages):
            raise SpecError("only unscaled architectures of the search space are paths through the supernet")
        layout = network_layout(spec)
        for index, stage in enumerate(layout.stages):
            if len(stage) > len(self.stages[index]) or stage[-1].out_channels > self.shape.max_channels[index]:
                raise SpecError(f"stage {index + 1} is deeper or wider than the supernet's")
            if any(block_kind(b) not in self.shape.kinds or b.kernel > MAX_KERNEL for b in stage):
                raise SpecError(f"stage {index + 1} has a block type or kernel the supernet does not hold")
        return layout

    def forward(self, x: torch.Tensor, layout: NetworkLayout) -> torch.Tensor:
        x = self.stem(x)
        for layers, stage in zip(self.stages, layout.stages):
            for layer, b in zip(layers, stage):
                x = layer(x, b)
        x = self.head(x, layout.head_channels)
        return self.classifier(x.mean((2, 3)))

    def path_state(self, layout: NetworkLayout) -> Tensors:
        """The weights of a path, under the names of the network `build_model` makes of it."""
        state: Tensors = {f"stem.{key}": value for key, value in self.stem.state_dict().items()}
        for s, (layers, stage) in enumerate(zip(self.stages, layout.stages)):
            for index, (layer, b) in enumerate(zip(layers, stage)):
                block = layer.blocks[block_kind(b)].state_for(b)
                state.update({f"stages.{s}.{index}.{key}": value for key, value in block.items()})
        state.update({f"head.{key}": value for key, value in self.head.state_for(layout.head_in,
                                                                                  layout.head_channels).items()})
        state.update({f"classifier.{key}": value for key, value in self.classifier.state_dict().items()})
        return state

    @torch.no_grad()
    def extract(self, spec: ArchSpec) -> EfficientNet:
        """`spec` as a standalone network of the one builder, with this path's weights copied in."""
        model = build_model(spec)
        model.load_state_dict({key: value.detach().clone() for key, value in self.path_state(self.path(spec)).items()})
        return model.to(next(self.parameters()).device)


class SupernetPath(nn.Module):
    """One path of a supernet as a module of its own, sharing the supernet's weights (nothing is copied)."""

    def __init__(self, supernet: Supernet, layout: NetworkLayout) -> None:
        super().__init__()
        self.supernet = supernet
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.layout)


def extreme_samples(space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sandwich rule's largest and smallest paths. The largest is widest, deepest, 5x5 and with SE, in each
    stage the MBConv that counts the most FLOPs (the regular conv would count more: at 32 px its largest path
    counts 1.6x the FLOPs, a teacher that would cost more than the rest of each step). The smallest is the
    opposite, with the block type that counts the fewest FLOPs. Block types are chosen stage by stage."""
    choices = space.choices()
    largest: dict[str, Any] = {}
    smallest: dict[str, Any] = {}
    for label, values in choices:
        if label.endswith("_skip"):
            largest[label] = smallest[label] = "identity" if "identity" in values else values[0]
        elif not label.endswith("_block"):
            largest[label], smallest[label] = max(values), min(values)
    for label, values in choices:
        if not label.endswith("_block"):
            continue
        mbconv = [value for value in values if BLOCK_CHOICES[value][0] == "mbconv"] or list(values)
        for sample, pick, allowed in ((largest, max, mbconv), (smallest, min, values)):
            rest = {other: vals[0] for other, vals in choices if other.endswith("_block") and other not in sample}
            sample[label] = pick(allowed, key=lambda value: count_flops(space.decode({**sample, **rest, label: value})))
    return largest, smallest
