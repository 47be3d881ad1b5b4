"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016) for CIFAR.

WRN-d-k: a 3×3 stem with 16 channels, three groups of n = (d − 4) / 6 pre-activation
BasicBlocks (BN-ReLU-conv3×3-BN-ReLU-conv3×3) with 16k, 32k and 64k channels (strides 1, 2, 2),
then BN-ReLU, global average pooling and a linear classifier. Where a block changes shape its
shortcut is a 1×1 convolution of the pre-activated input. No dropout. As RepDistiller's
`wrn_16_2` / `wrn_40_2`, the KD literature's CIFAR benchmarks (parameter counts checked in
tests/models/test_architectures.py).
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.architectures.wrn import STRIDES, wrn_widths
from kdlab.models import register_family
from kdlab.models.base import StagedConvNet


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


@register_family("wrn")
class WideResNet(StagedConvNet):
    """WRN-depth-widen; stages `stage1`..`stage3` (group outputs), `embedding` of 64·widen."""

    def __init__(
        self, depth: int, widen: int, in_channels: int = 3, num_classes: int = 10,
        image_size: int | None = None,
    ) -> None:  # fmt: skip
        """`image_size` is accepted for a uniform registry; these networks take any size."""
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        widths = wrn_widths(widen)
        stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks = (depth - 4) // 6
        self.build(stem, PreActBlock, widths[0], widths[1:], STRIDES, blocks, num_classes,
                   head=lambda width: nn.Sequential(nn.BatchNorm2d(width), nn.ReLU()))  # fmt: skip
        nn.init.zeros_(self.fc.bias)  # as RepDistiller's WRN
