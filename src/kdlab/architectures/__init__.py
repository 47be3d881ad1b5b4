"""Every architecture by name: its hyper-parameters and feature shapes, computed without building
it (and without torch).

`kdlab check` validates a teacher/student pair and its KD method against these shapes before
anything runs; importing torch alone takes longer than the whole check. Each family is two
files, like a KD method: `kdlab/architectures/<family>.py` registers its names, hyper-parameters
and shape function here (torch-free), and `kdlab/models/<family>.py` builds the network from the
same hyper-parameters (`kdlab.models.register_family`). A test runs every architecture on every
dataset's image shape to keep the computed and the built shapes equal.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

from kdlab.errors import ConfigError

DYNAMIC_IMPORTS = ("kdlab.architectures",)
"""Packages whose every module `load_archs` imports by name (read by kdlab.codedeps)."""


@dataclasses.dataclass(frozen=True)
class ShapeInfo:
    """Per-sample feature shapes of a model on a given input size (what KD methods adapt to)."""

    stages: dict[str, tuple[int, ...]]  # name -> (C, H, W) for conv maps, (T, D) for tokens
    embedding_dim: int
    num_classes: int
    attention_heads: tuple[int, ...] = ()
    """Heads of each nn.MultiheadAttention, in network order (none for convolutional nets)."""
    kind: str = "image"
    """The data kind the network reads (`image`, `sequence`): what a KD method may assume."""


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    family: str
    """The builder in kdlab.models (`register_family`) that makes this network from `config`."""
    config: Mapping[str, Any]
    """The family's constructor arguments (depth, widths, ...)."""
    shapes: Callable[[Mapping[str, Any], int, Any], ShapeInfo]
    """(config, num_classes, input_size) -> ShapeInfo, input_size being the image side (image
    families) or (T_max, C) (sequence families); raise ConfigError for an unusable size."""
    kind: str = "image"
    """The data kind it reads: `image` (B, C, H, W) or `sequence` (B, T, C) + padding mask."""


ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, family: str, config: Mapping[str, Any],
                  shapes: Callable[[Mapping[str, Any], int, Any], ShapeInfo],
                  kind: str = "image") -> None:  # fmt: skip
    """Called by kdlab/architectures/<family>.py: `<role>.arch: <name>` exists."""
    if name in ARCHS:
        raise RuntimeError(f"architecture {name!r} registered twice")
    ARCHS[name] = ArchSpec(name, family, dict(config), shapes, kind)


@functools.cache
def load_archs() -> dict[str, ArchSpec]:
    """Every architecture (imports each family module of this package once), in family order:
    each family lists its own names in the order it registers them."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    ordered = sorted(ARCHS.values(), key=lambda spec: spec.family)  # stable within a family
    ARCHS.clear()
    ARCHS.update((spec.name, spec) for spec in ordered)
    return ARCHS


def arch_names() -> list[str]:
    return list(load_archs())


def get_arch(arch: str) -> ArchSpec:
    archs = load_archs()
    if arch not in archs:
        raise ConfigError(f"arch must be one of {', '.join(archs)}, got {arch!r}")
    return archs[arch]


def arch_names_for(kind: str) -> list[str]:
    """The architectures that read data of `kind` (image, sequence)."""
    return [name for name, spec in load_archs().items() if spec.kind == kind]


def check_arch_kind(path: str, arch: str, kind: str, dataset: str) -> None:
    """`arch` must read data of the dataset's kind: one line naming the ones that do."""
    spec = get_arch(arch)
    if spec.kind != kind:
        raise ConfigError(f"{path} {arch} is a{'n' if spec.kind == 'image' else ''} {spec.kind} "
                          f"model and {dataset} is a{'n' if kind == 'image' else ''} {kind} "
                          f"dataset: use one of {', '.join(arch_names_for(kind))}")  # fmt: skip


def feature_shapes(arch: str, num_classes: int, image_size: Any) -> ShapeInfo:
    """`arch`'s stage, embedding and logit shapes on square images of `image_size` pixels (or,
    for a sequence model, on sequences of `image_size` = (T_max, C))."""
    spec = get_arch(arch)
    return spec.shapes(spec.config, num_classes, image_size)


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3×3 convolution with padding 1."""
    return (size + 2 * 1 - 3) // stride + 1


def layer_names(shapes: ShapeInfo) -> tuple[str, ...]:
    """The extractable layers (FeatureModel.hook_points): the stages, then `embedding`."""
    return (*shapes.stages, "embedding")
