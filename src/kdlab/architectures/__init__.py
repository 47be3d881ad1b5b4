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
    check_size: Callable[[str, Mapping[str, Any]], None] | None = None
    """(path, merged config) -> None or ConfigError: the family takes sizes from params
    (`<role>.size`, overriding the preset's config); None: the name fixes the size."""


ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, family: str, config: Mapping[str, Any],
                  shapes: Callable[[Mapping[str, Any], int, Any], ShapeInfo],
                  kind: str = "image",
                  check_size: Callable[[str, Mapping[str, Any]], None] | None = None,
                  ) -> None:  # fmt: skip
    """Called by kdlab/architectures/<family>.py: `<role>.arch: <name>` exists."""
    if name in ARCHS:
        raise RuntimeError(f"architecture {name!r} registered twice")
    ARCHS[name] = ArchSpec(name, family, dict(config), shapes, kind, check_size)


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


Size = tuple[tuple[str, Any], ...]
"""`<role>.size` as sorted (key, value) pairs: hashable, so shape computations can be cached."""


def size_items(size: Mapping[str, Any] | Size | None) -> Size:
    if not size:
        return ()
    items = size.items() if isinstance(size, Mapping) else size
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items))


def sized_config(arch: str, size: Mapping[str, Any] | Size | None = None) -> dict[str, Any]:
    """The preset's config with `<role>.size` over it (validated by `check_size`)."""
    return {**get_arch(arch).config, **dict(size_items(size))}


def check_size(path: str, arch: str, size: Mapping[str, Any]) -> None:
    """`<role>.size` (path) for `arch`: keys of the preset's config, values of their types and
    what the family accepts; one line naming the field and the valid keys or values."""
    if not size:
        return
    spec = get_arch(arch)
    if spec.check_size is None:
        sized = [name for name, s in load_archs().items() if s.check_size is not None]
        raise ConfigError(f"{path}: {arch}'s size is fixed by its name; sizes from params are "
                          f"for {', '.join(sorted({load_archs()[n].family for n in sized}))} "
                          f"models ({', '.join(sized)}); set {path} to {{}}")  # fmt: skip
    for key, value in size.items():
        if key not in spec.config:
            raise ConfigError(f"{path}.{key} is not a size of {arch}: valid keys are "
                              f"{', '.join(spec.config)}")  # fmt: skip
        preset = spec.config[key]
        kind = type(preset)
        ok = isinstance(value, kind) and isinstance(value, bool) == isinstance(preset, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            shown = str(preset).lower() if isinstance(preset, bool) else repr(preset)
            raise ConfigError(f"{path}.{key} must be {_type_name(preset)} (as {arch}'s "
                              f"{shown}), got {value!r}")  # fmt: skip
    spec.check_size(path, sized_config(arch, size))


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    return {int: "an integer", float: "a number", str: "a string"}.get(type(value), "a list")


def arch_label(arch: str, size: Mapping[str, Any] | None = None) -> str:
    """How a network is named in tables: `spoter_small`, or `spoter_small{dim=96,heads=6}`
    when `<role>.size` overrides the preset."""
    if not size:
        return arch
    return f"{arch}{{{','.join(f'{k}={v}' for k, v in sorted(size.items()))}}}"


def feature_shapes(arch: str, num_classes: int, image_size: Any,
                   size: Mapping[str, Any] | Size | None = None) -> ShapeInfo:  # fmt: skip
    """`arch`'s stage, embedding and logit shapes on square images of `image_size` pixels (or,
    for a sequence model, on sequences of `image_size` = (T_max, C)), with `<role>.size`."""
    spec = get_arch(arch)
    return spec.shapes(sized_config(arch, size), num_classes, image_size)


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3×3 convolution with padding 1."""
    return (size + 2 * 1 - 3) // stride + 1


def layer_names(shapes: ShapeInfo) -> tuple[str, ...]:
    """The extractable layers (FeatureModel.hook_points): the stages, then `embedding`."""
    return (*shapes.stages, "embedding")
