"""KD methods, one module each, registered by name in `METHODS`.

Every module in this package is imported here, so adding a method is adding one file that
defines a `Distiller` subclass decorated with `@register("<name>", <ParamsDataclass>)`.
"""

from __future__ import annotations

import importlib
import pkgutil

from kdlab.distill.base import (
    METHODS,
    Distiller,
    LossTerms,
    MethodSpec,
    PairInfo,
    register,
    student_loss,
)
from kdlab.errors import ConfigError

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def get_method(method: str) -> MethodSpec:
    spec = METHODS.get(method)
    if spec is None:
        raise ConfigError(f"kd.method must be one of {', '.join(METHODS)}, got {method!r}")
    return spec


def make_distiller(method: str, params=None, pair: PairInfo | None = None) -> Distiller:
    """Build KD method `method` (params None = its defaults) for the networks in `pair`."""
    spec = get_method(method)
    if params is None and spec.params_cls is not None:
        params = spec.params_cls()
    if pair is not None:
        spec.cls.check(params, pair)
    return spec.cls(params, pair)


__all__ = [
    "METHODS",
    "Distiller",
    "LossTerms",
    "MethodSpec",
    "make_distiller",
    "register",
    "student_loss",
]
