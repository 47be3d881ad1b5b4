"""CIFAR ResNets (He et al. 2016, §4.2) and RepDistiller's 4×-wide resnet8x4 / resnet32x4."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdlab.architectures import ShapeInfo, conv_out, register_arch

STRIDES = (1, 2, 2)
"""Strides of the three stages."""


def resnet_shapes(config: Mapping[str, Any], num_classes: int, image_size: int) -> ShapeInfo:
    stages, size = {}, image_size
    for i, (channels, stride) in enumerate(zip(config["widths"][1:], STRIDES, strict=True), 1):
        size = conv_out(size, stride)
        stages[f"stage{i}"] = (channels, size, size)
    return ShapeInfo(stages, config["widths"][-1], num_classes)


# depth = 6n + 2; widths = (stem, stage1, stage2, stage3), as RepDistiller's `num_filters`.
for depth in (8, 14, 20, 32, 44, 56, 110):
    register_arch(f"resnet{depth}", "resnet", {"depth": depth, "widths": (16, 16, 32, 64)},
                  resnet_shapes)  # fmt: skip
for depth in (8, 32):
    register_arch(f"resnet{depth}x4", "resnet", {"depth": depth, "widths": (32, 64, 128, 256)},
                  resnet_shapes)  # fmt: skip
