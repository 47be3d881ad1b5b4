"""Every architecture's hyper-parameters and feature shapes, computed without building it (and
without torch).

`kdlab check` validates a teacher/student pair and its KD method against these shapes before
anything runs; importing torch alone takes longer than the whole check. The architectures'
hyper-parameters live here once: `kdlab.models` builds its networks from the same tables, and a
test runs every architecture on every dataset's image shape to keep the two equal.
"""

from __future__ import annotations

import dataclasses

from kdlab.errors import ConfigError

RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
"""CIFAR ResNets, resnet<depth>: depth = 6n + 2."""
RESNET_STAGE_CHANNELS = (16, 32, 64)
RESNET_STAGE_STRIDES = (1, 2, 2)
VITS = {"vit_tiny": {"depth": 4, "heads": 4, "dim": 64, "mlp_dim": 128}}
"""ViT name -> constructor arguments (kdlab.models.vit.ViT)."""


@dataclasses.dataclass(frozen=True)
class ShapeInfo:
    """Per-sample feature shapes of a model on a given input size (what KD methods adapt to)."""

    stages: dict[str, tuple[int, ...]]  # name -> (C, H, W) for conv maps, (T, D) for tokens
    embedding_dim: int
    num_classes: int


def arch_names() -> list[str]:
    return [*(f"resnet{depth}" for depth in RESNET_DEPTHS), *VITS]


def vit_patch_size(image_size: int) -> int:
    """A 4×4 patch grid for tiny images (8×8 digits: 2×2 patches), 4-pixel patches otherwise."""
    return max(1, image_size // 4) if image_size <= 16 else 4


def _conv_out(size: int, stride: int) -> int:
    return (size + 2 * 1 - 3) // stride + 1  # 3×3 convolution, padding 1


def resnet_shapes(num_classes: int, image_size: int) -> ShapeInfo:
    stages, size = {}, image_size
    for i, (channels, stride) in enumerate(
        zip(RESNET_STAGE_CHANNELS, RESNET_STAGE_STRIDES, strict=True), start=1
    ):
        size = _conv_out(size, stride)
        stages[f"stage{i}"] = (channels, size, size)
    return ShapeInfo(stages, RESNET_STAGE_CHANNELS[-1], num_classes)


def vit_shapes(config: dict, num_classes: int, image_size: int) -> ShapeInfo:
    patch = vit_patch_size(image_size)
    if image_size % patch:
        raise ConfigError(f"a ViT needs an image size that is a multiple of its patch size "
                          f"{patch}; got {image_size}")  # fmt: skip
    tokens = (image_size // patch) ** 2 + 1  # the patches and the class token
    stages = {f"block{i + 1}": (tokens, config["dim"]) for i in range(config["depth"])}
    return ShapeInfo(stages, config["dim"], num_classes)


def feature_shapes(arch: str, num_classes: int, image_size: int) -> ShapeInfo:
    """`arch`'s stage, embedding and logit shapes on square images of `image_size` pixels."""
    if arch in VITS:
        return vit_shapes(VITS[arch], num_classes, image_size)
    if arch in {f"resnet{depth}" for depth in RESNET_DEPTHS}:
        return resnet_shapes(num_classes, image_size)
    raise ConfigError(f"arch must be one of {', '.join(arch_names())}, got {arch!r}")


def layer_names(shapes: ShapeInfo) -> tuple[str, ...]:
    """The extractable layers (FeatureModel.hook_points): the stages, then `embedding`."""
    return (*shapes.stages, "embedding")
