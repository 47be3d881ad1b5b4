"""Model registry: every architecture a teacher or student can use, by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from kdlab.architectures import RESNET_DEPTHS, VITS
from kdlab.errors import ConfigError
from kdlab.models.base import FeatureModel, Features, ShapeInfo, probe_shapes
from kdlab.models.resnet import CifarResNet
from kdlab.models.vit import ViT

MODELS: dict[str, Callable[..., FeatureModel]] = {
    **{f"resnet{depth}": partial(CifarResNet, depth) for depth in RESNET_DEPTHS},
    **{name: partial(ViT, **config) for name, config in VITS.items()},
}
"""Built from kdlab.architectures' tables, which give the same shapes without torch."""


def make_model(arch: str, in_channels: int, num_classes: int, image_size: int = 32) -> FeatureModel:
    """Build `arch` for square images of `image_size` pixels, `in_channels`, `num_classes`."""
    if arch not in MODELS:
        raise ConfigError(f"arch must be one of {', '.join(MODELS)}, got {arch!r}")
    return MODELS[arch](in_channels=in_channels, num_classes=num_classes, image_size=image_size)


__all__ = ["MODELS", "FeatureModel", "Features", "ShapeInfo", "make_model", "probe_shapes"]
