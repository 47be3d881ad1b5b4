"""Each KD method's params (`kd.<method>:`) and the network pairs it can serve, one torch-free
module per method (see kdlab.distill.spec), and `load_specs()`, which imports them all."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from kdlab.distill.spec import SPECS, MethodSpec, PairInfo, serves_any_pair
from kdlab.errors import ConfigError

DYNAMIC_IMPORTS = ("kdlab.distill.specs",)
"""Packages whose every module `load_specs` imports by name (read by kdlab.codedeps)."""


@functools.cache
def load_specs() -> dict[str, MethodSpec]:
    """Every KD method's spec (imports each module of this package once)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    ordered = sorted(SPECS.items())  # by name, whichever module was imported first
    SPECS.clear()
    SPECS.update(ordered)
    return SPECS


def get_spec(method: str) -> MethodSpec:
    specs = load_specs()
    if method not in specs:
        raise ConfigError(f"kd.method must be one of {', '.join(specs)}, got {method!r}")
    return specs[method]


def methods_serving(pair: PairInfo) -> list[str]:
    """The methods (by name) whose check accepts `pair` with their default params."""
    served = []
    for name, spec in load_specs().items():
        try:
            spec.check(spec.params_cls() if spec.params_cls else None, pair)
        except ConfigError:
            continue  # e.g. minilm on ResNets, feature-map methods on ViTs
        served.append(name)
    return served


def require_conv_maps(method: str, pair: PairInfo) -> None:
    """Refuse models whose stages are not (C, H, W) feature maps (e.g. a ViT's token sequences)."""
    for role, info in (("student", pair.student), ("teacher", pair.teacher)):
        if any(len(shape) != 3 for shape in info.stages.values()):
            any_pair = [n for n, s in load_specs().items() if s.check is serves_any_pair]
            raise ConfigError(
                f"kd.method {method} needs convolutional feature maps (C, H, W); the {role}'s "
                f"stages are token sequences: use {' or '.join(any_pair)} with a "
                f"{'sequence transformer' if info.kind == 'sequence' else 'ViT'}"
            )
