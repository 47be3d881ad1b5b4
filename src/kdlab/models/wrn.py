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
from kdlab.models.base import FeatureModel, Features


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
class WideResNet(FeatureModel):
    """WRN-depth-widen; stages `stage1`..`stage3` (group outputs), `embedding` of 64·widen."""

    stage_names = ("stage1", "stage2", "stage3")

    def __init__(
        self, depth: int, widen: int, in_channels: int = 3, num_classes: int = 10,
        image_size: int | None = None,
    ) -> None:  # fmt: skip
        """`image_size` is accepted for a uniform registry; these networks take any size."""
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = wrn_widths(widen)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        channels = widths[0]
        for i, (width, stride) in enumerate(zip(widths[1:], STRIDES, strict=True), start=1):
            layers = []
            for b in range(blocks):
                layers.append(PreActBlock(channels, width, stride if b == 0 else 1))
                channels = width
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self.embedding_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def embedding_hook(self):
        return self.pool, lambda pooled: pooled

    def forward_features(self, x: torch.Tensor) -> Features:
        out = self.stem(x)
        stages = {}
        for name in self.stage_names:
            out = getattr(self, name)(out)
            stages[name] = out
        embedding = self.pool(self.head(out))
        return Features(stages=stages, embedding=embedding, logits=self.fc(embedding))
