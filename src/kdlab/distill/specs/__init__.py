"""Each KD method's params (`kd.<method>:`) and the network pairs it can serve, one torch-free
module per method (see kdlab.distill.spec), and `load_specs()`, which imports them all."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from kdlab.distill.spec import SPECS, MethodSpec
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
