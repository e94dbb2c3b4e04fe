"""FLOPs and parameter counts.

Project convention: "FLOPs" are the multiply-accumulates of convolution and fully-connected layers only, as in
the EfficientNet and MnasNet papers and torchvision's figures (EfficientNet-B0 at 224: 385.8M). BatchNorm,
activations, pooling, the SE gate and residual additions count zero; biases are not multiply-accumulates.

Two counters that agree exactly: `count_flops` / `count_params` compute from the spec alone (no model, no
forward pass; used wherever many candidates are counted) and `measure_flops` / `measure_params` profile a
built model with thop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas.space.layout import STEM_KERNEL, BlockLayout, NetworkLayout, network_layout
from nas.space.spec import ArchSpec

if TYPE_CHECKING:
    from torch import nn

FLOPS_CONVENTION = "FLOPs = multiply-accumulates of conv and linear layers"


def _conv_macs(out_size: int, out_channels: int, in_channels: int, kernel: int, groups: int = 1) -> int:
    return out_size * out_size * out_channels * (in_channels // groups) * kernel * kernel


def _conv_params(out_channels: int, in_channels: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    return out_channels * (in_channels // groups) * kernel * kernel + (out_channels if bias else 0)


def _bn_params(channels: int) -> int:
    return 2 * channels


def _se_macs(channels: int, se: int) -> int:
    return 2 * channels * se if se else 0


def _se_params(channels: int, se: int) -> int:
    return _conv_params(se, channels, 1, bias=True) + _conv_params(channels, se, 1, bias=True) if se else 0


def _block_macs(b: BlockLayout) -> int:
    if b.block == "mbconv":
        expand = _conv_macs(b.in_size, b.mid_channels, b.in_channels, 1) if b.mid_channels != b.in_channels else 0
        return (
            expand
            + _conv_macs(b.out_size, b.mid_channels, b.mid_channels, b.kernel, b.mid_channels)
            + _se_macs(b.mid_channels, b.se_channels)
            + _conv_macs(b.out_size, b.out_channels, b.mid_channels, 1)
        )
    if b.block == "dsconv":
        return (
            _conv_macs(b.out_size, b.in_channels, b.in_channels, b.kernel, b.in_channels)
            + _se_macs(b.in_channels, b.se_channels)
            + _conv_macs(b.out_size, b.out_channels, b.in_channels, 1)
        )
    return _conv_macs(b.out_size, b.out_channels, b.in_channels, b.kernel) + _se_macs(b.out_channels, b.se_channels)


def _block_params(b: BlockLayout) -> int:
    if b.block == "mbconv":
        expand = (
            _conv_params(b.mid_channels, b.in_channels, 1) + _bn_params(b.mid_channels)
            if b.mid_channels != b.in_channels
            else 0
        )
        return (
            expand
            + _conv_params(b.mid_channels, b.mid_channels, b.kernel, b.mid_channels)
            + _bn_params(b.mid_channels)
            + _se_params(b.mid_channels, b.se_channels)
            + _conv_params(b.out_channels, b.mid_channels, 1)
            + _bn_params(b.out_channels)
        )
    if b.block == "dsconv":
        return (
            _conv_params(b.in_channels, b.in_channels, b.kernel, b.in_channels)
            + _bn_params(b.in_channels)
            + _se_params(b.in_channels, b.se_channels)
            + _conv_params(b.out_channels, b.in_channels, 1)
            + _bn_params(b.out_channels)
        )
    return (
        _conv_params(b.out_channels, b.in_channels, b.kernel)
        + _bn_params(b.out_channels)
        + _se_params(b.out_channels, b.se_channels)
    )


def layout_flops(layout: NetworkLayout) -> int:
    stem = _conv_macs(layout.stem_size, layout.stem_channels, layout.in_channels, STEM_KERNEL)
    head = _conv_macs(layout.head_size, layout.head_channels, layout.head_in, 1)
    return stem + sum(_block_macs(b) for b in layout.blocks) + head + layout.head_channels * layout.num_classes


def layout_params(layout: NetworkLayout) -> int:
    stem = _conv_params(layout.stem_channels, layout.in_channels, STEM_KERNEL) + _bn_params(layout.stem_channels)
    head = _conv_params(layout.head_channels, layout.head_in, 1) + _bn_params(layout.head_channels)
    classifier = layout.head_channels * layout.num_classes + layout.num_classes
    return stem + sum(_block_params(b) for b in layout.blocks) + head + classifier


def count_flops(spec: ArchSpec, resolution: int | None = None) -> int:
    """Analytic multiply-accumulates of `spec` at `resolution` (default: the spec's)."""
    return layout_flops(network_layout(spec, resolution))


def count_params(spec: ArchSpec) -> int:
    """Analytic number of trainable parameters of `spec`."""
    return layout_params(network_layout(spec, spec.resolution))


def measure_flops(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of a built model measured by thop on one image (BN, activations, pooling count 0)."""
    # PyTorch and thop load here, not with the module: the analytic counters serve commands that must start fast.
    import torch
    from thop import profile
    from thop.vision.basic_hooks import zero_ops
    from torch import nn

    zero_cost = {module: zero_ops for module in (nn.BatchNorm2d, nn.SiLU, nn.Sigmoid, nn.AdaptiveAvgPool2d, nn.Dropout,
                                                  nn.Identity)}
    was_training = model.training
    x = torch.zeros(1, in_channels, resolution, resolution)
    macs, _ = profile(model, inputs=(x,), custom_ops=zero_cost, verbose=False)
    model.train(was_training)
    return int(macs)


def measure_params(model: nn.Module) -> int:
    """Trainable parameters of a built model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def format_flops(flops: float) -> str:
    """`385.8M`, `1.02G`: the project's way of printing FLOPs."""
    if flops >= 1e9:
        return f"{flops / 1e9:.2f}G"
    if flops >= 1e6:
        return f"{flops / 1e6:.1f}M"
    if flops >= 1e3:
        return f"{flops / 1e3:.1f}K"
    return f"{flops:.0f}"


def format_params(params: float) -> str:
    return f"{params / 1e6:.2f}M" if params >= 1e5 else f"{params / 1e3:.1f}K"
