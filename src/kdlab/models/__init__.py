"""Model registry: every architecture a teacher or student can use, by name.

The names and hyper-parameters are kdlab.architectures' (torch-free, what `kdlab check` reads);
each family's module here builds its networks, registered with `@register_family(<family>)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from kdlab.architectures import load_archs
from kdlab.errors import ConfigError
from kdlab.models.base import FeatureModel, Features, ShapeInfo, probe_shapes

DYNAMIC_IMPORTS = ("kdlab.models",)
"""Packages whose every module this module imports by name (read by kdlab.codedeps)."""

FAMILIES: dict[str, Callable[..., FeatureModel]] = {}


def register_family(family: str):
    """Class decorator: build the architectures of `family` (kdlab.architectures) with this
    class, called with the architecture's config and in_channels, num_classes, image_size."""

    def decorate(cls: type[FeatureModel]) -> type[FeatureModel]:
        if family in FAMILIES:
            raise RuntimeError(f"model family {family!r} registered twice")
        FAMILIES[family] = cls
        return cls

    return decorate


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

MODELS: dict[str, Callable[..., FeatureModel]] = {
    name: partial(FAMILIES[spec.family], **spec.config) for name, spec in load_archs().items()
}
"""Architecture name -> constructor(in_channels, num_classes, image_size)."""


def make_model(arch: str, in_channels: int, num_classes: int, image_size: int = 32,
               size: Mapping[str, Any] | None = None) -> FeatureModel:  # fmt: skip
    """Build `arch` for square images of `image_size` pixels (a sequence model: sequences of
    at most `image_size` frames), `in_channels`, `num_classes`; `size` (`<role>.size`, checked
    by kdlab.architectures.check_size) overrides the preset's hyper-parameters."""
    if arch not in MODELS:
        raise ConfigError(f"arch must be one of {', '.join(MODELS)}, got {arch!r}")
    return MODELS[arch](in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                        **dict(size or {}))  # fmt: skip


__all__ = ["MODELS", "FeatureModel", "Features", "ShapeInfo", "make_model", "probe_shapes"]
