"""From layout to network: PyTorch modules for a spec, as `nas.space.layout` resolves it."""

from __future__ import annotations

from torch import nn

from nas.space.blocks import ConvBnAct, DepthwiseSeparable, MBConv, RegularConv
from nas.space.layout import STEM_KERNEL, BlockLayout, NetworkLayout, network_layout
from nas.space.spec import ArchSpec

_BLOCK_MODULES = {"mbconv": MBConv, "dsconv": DepthwiseSeparable, "conv": RegularConv}


def build_block(layout: BlockLayout) -> nn.Module:
    return _BLOCK_MODULES[layout.block](layout)


class EfficientNet(nn.Module):
    """Stem, stages of blocks, head: the model class only assembles what the layout describes."""

    def __init__(self, layout: NetworkLayout) -> None:
        super().__init__()
        self.stem = ConvBnAct(layout.in_channels, layout.stem_channels, STEM_KERNEL, layout.stem_stride)
        self.stages = nn.Sequential(
            *(nn.Sequential(*(build_block(block) for block in stage)) for stage in layout.stages)
        )
        self.head = ConvBnAct(layout.head_in, layout.head_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(layout.dropout)
        self.classifier = nn.Linear(layout.head_channels, layout.num_classes)
        _init_weights(self)

    def forward(self, x):
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


def _init_weights(model: nn.Module) -> None:
    # The official TF initialisers: fan-out normal for convs, uniform 1/sqrt(fan_out) for the classifier.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / module.out_features**0.5
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)


def build_model(spec: ArchSpec) -> EfficientNet:
    """The PyTorch network of a spec (plain torch modules, nothing of NNI inside)."""
    return EfficientNet(network_layout(spec))
