"""Model registry: every architecture a teacher or student can use, by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from kdlab.errors import ConfigError
from kdlab.models.base import FeatureModel, Features, ShapeInfo, probe_shapes
from kdlab.models.resnet import CifarResNet

MODELS: dict[str, Callable[..., FeatureModel]] = {
    f"resnet{depth}": partial(CifarResNet, depth) for depth in (8, 14, 20, 32, 44, 56, 110)
}


def make_model(arch: str, in_channels: int, num_classes: int) -> FeatureModel:
    """Build `arch` for images with `in_channels` channels and `num_classes` classes."""
    if arch not in MODELS:
        raise ConfigError(f"arch must be one of {', '.join(MODELS)}, got {arch!r}")
    return MODELS[arch](in_channels=in_channels, num_classes=num_classes)


__all__ = ["MODELS", "FeatureModel", "Features", "ShapeInfo", "make_model", "probe_shapes"]
