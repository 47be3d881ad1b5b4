"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

depth = 6n + 2: a 3×3 stem, then three stages of n BasicBlocks (strides 1, 2, 2), global average
pooling and a linear classifier. Widths (stem, stage1..3) are 16, 16, 32, 64 for resnet<depth>
and 32, 64, 128, 256 for RepDistiller's resnet8x4 / resnet32x4 (kdlab.architectures.resnet).
Where a block changes shape its shortcut is a 1×1 convolution + BatchNorm (option B), as in
the CIFAR ResNets that the KD literature benchmarks on (RepDistiller / CRD).
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.architectures.resnet import STRIDES
from kdlab.models import register_family
from kdlab.models.base import StagedConvNet


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_family("resnet")
class CifarResNet(StagedConvNet):
    """ResNet-(6n+2) for small images; stages `stage1`..`stage3`, `embedding` of widths[-1]."""

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        in_channels: int = 3, num_classes: int = 10, image_size: int | None = None,
    ) -> None:  # fmt: skip
        """`image_size` is accepted for a uniform registry; these ResNets take any size."""
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        self.depth = depth
        stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.build(stem, BasicBlock, widths[0], widths[1:], STRIDES, (depth - 2) // 6, num_classes)
