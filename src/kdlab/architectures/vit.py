"""Small Vision Transformers on nn.MultiheadAttention (kdlab.models.vit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdlab.architectures import ShapeInfo, register_arch
from kdlab.errors import ConfigError


def vit_patch_size(image_size: int) -> int:
    """A 4×4 patch grid for tiny images (8×8 digits: 2×2 patches), 4-pixel patches otherwise."""
    return max(1, image_size // 4) if image_size <= 16 else 4


def vit_shapes(config: Mapping[str, Any], num_classes: int, image_size: int) -> ShapeInfo:
    patch = vit_patch_size(image_size)
    if image_size % patch:
        raise ConfigError(f"a ViT needs an image size that is a multiple of its patch size "
                          f"{patch}; got {image_size}")  # fmt: skip
    tokens = (image_size // patch) ** 2 + 1  # the patches and the class token
    stages = {f"block{i + 1}": (tokens, config["dim"]) for i in range(config["depth"])}
    return ShapeInfo(stages, config["dim"], num_classes, (config["heads"],) * config["depth"])


register_arch("vit_tiny", "vit", {"depth": 4, "heads": 4, "dim": 64, "mlp_dim": 128}, vit_shapes)
register_arch("vit_small", "vit", {"depth": 6, "heads": 8, "dim": 128, "mlp_dim": 256}, vit_shapes)
