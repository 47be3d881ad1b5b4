"""Wide ResNets (Zagoruyko & Komodakis 2016) for CIFAR: WRN-16-2 and WRN-40-2, as RepDistiller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdlab.architectures import ShapeInfo, conv_out, register_arch

STRIDES = (1, 2, 2)
"""Strides of the three groups."""


def wrn_widths(widen: int) -> tuple[int, int, int, int]:
    """(stem, group1..3) channels."""
    return (16, 16 * widen, 32 * widen, 64 * widen)


def wrn_shapes(config: Mapping[str, Any], num_classes: int, image_size: int) -> ShapeInfo:
    widths = wrn_widths(config["widen"])
    stages, size = {}, image_size
    for i, (channels, stride) in enumerate(zip(widths[1:], STRIDES, strict=True), 1):
        size = conv_out(size, stride)
        stages[f"stage{i}"] = (channels, size, size)
    return ShapeInfo(stages, widths[-1], num_classes)


# depth = 6n + 4: n pre-activation BasicBlocks per group.
for depth, widen in ((16, 2), (40, 2)):
    register_arch(f"wrn_{depth}_{widen}", "wrn", {"depth": depth, "widen": widen}, wrn_shapes)
