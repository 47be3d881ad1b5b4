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
from kdlab.models.base import FeatureModel, Features


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
class CifarResNet(FeatureModel):
    """ResNet-(6n+2) for small images; stages `stage1`..`stage3`, `embedding` of widths[-1]."""

    stage_names = ("stage1", "stage2", "stage3")

    def __init__(
        self, depth: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        in_channels: int = 3, num_classes: int = 10, image_size: int | None = None,
    ) -> None:  # fmt: skip
        """`image_size` is accepted for a uniform registry; these ResNets take any size."""
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        channels = widths[0]
        for i, (width, stride) in enumerate(zip(widths[1:], STRIDES, strict=True), start=1):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(channels, width, stride if b == 0 else 1))
                channels = width
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self.embedding_dim = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embedding_hook(self):
        return self.pool, lambda pooled: pooled

    def forward_features(self, x: torch.Tensor) -> Features:
        out = self.stem(x)
        stages = {}
        for name in self.stage_names:
            out = getattr(self, name)(out)
            stages[name] = out
        embedding = self.pool(out)
        return Features(stages=stages, embedding=embedding, logits=self.fc(embedding))
