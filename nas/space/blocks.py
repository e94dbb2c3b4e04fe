"""The building blocks: MBConv, depthwise-separable conv, regular conv, squeeze-and-excitation."""

from __future__ import annotations

import torch
from torch import nn

from nas.space.layout import BlockLayout

# TF defaults: PyTorch momentum 0.01 is TF's decay 0.99.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class ConvBnAct(nn.Sequential):
    """Conv (no bias), BatchNorm with TF defaults, SiLU unless `act` is False."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class SqueezeExcite(nn.Module):
    """Channel attention; the squeeze width is decided from the block's input channels by the layout."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, se_channels, 1)
        self.act = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(se_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(scale))))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, in training only."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


class _Residual(nn.Module):
    """Shared forward: the block body, plus an identity skip with stochastic depth where the layout has one."""

    def __init__(self, layout: BlockLayout) -> None:
        super().__init__()
        self.has_skip = layout.skip
        self.drop_path = DropPath(layout.drop_path) if layout.skip else nn.Identity()

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + self.drop_path(out) if self.has_skip else out


def _squeeze(channels: int, layout: BlockLayout) -> nn.Module:
    return SqueezeExcite(channels, layout.se_channels) if layout.se_channels else nn.Identity()


class MBConv(_Residual):
    """Inverted bottleneck: 1x1 expansion (skipped at ratio 1), depthwise conv, SE, linear 1x1 projection."""

    def __init__(self, layout: BlockLayout) -> None:
        super().__init__(layout)
        mid = layout.mid_channels
        self.expand = ConvBnAct(layout.in_channels, mid, 1) if mid != layout.in_channels else nn.Identity()
        self.depthwise = ConvBnAct(mid, mid, layout.kernel, layout.stride, groups=mid)
        self.se = _squeeze(mid, layout)
        self.project = ConvBnAct(mid, layout.out_channels, 1, act=False)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.depthwise(self.expand(x))))


class DepthwiseSeparable(_Residual):
    """MobileNet-V1 separable conv: depthwise conv, SE, pointwise conv with activation."""

    def __init__(self, layout: BlockLayout) -> None:
        super().__init__(layout)
        self.depthwise = ConvBnAct(
            layout.in_channels, layout.in_channels, layout.kernel, layout.stride, groups=layout.in_channels
        )
        self.se = _squeeze(layout.in_channels, layout)
        self.pointwise = ConvBnAct(layout.in_channels, layout.out_channels, 1)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.se(self.depthwise(x)))


class RegularConv(_Residual):
    """A plain k x k conv with activation, then SE."""

    def __init__(self, layout: BlockLayout) -> None:
        super().__init__(layout)
        self.conv = ConvBnAct(layout.in_channels, layout.out_channels, layout.kernel, layout.stride)
        self.se = _squeeze(layout.out_channels, layout)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv(x))
