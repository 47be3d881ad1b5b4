"""KD methods, one module each, registered by name in `METHODS`.

Every module in this package is imported here, so adding a method is adding one file that
defines a `Distiller` subclass decorated with `@register("<name>", <ParamsDataclass>)`.
"""

from __future__ import annotations

import importlib
import pkgutil

from kdlab.distill.base import METHODS, Distiller, LossTerms, MethodSpec, register, student_loss
from kdlab.errors import ConfigError

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def make_distiller(method: str, params=None) -> Distiller:
    """Build the KD method `method` with its params dataclass (None = the method's defaults)."""
    spec = METHODS.get(method)
    if spec is None:
        raise ConfigError(f"kd.method must be one of {', '.join(METHODS)}, got {method!r}")
    if params is None and spec.params_cls is not None:
        params = spec.params_cls()
    return spec.cls(params)


__all__ = [
    "METHODS",
    "Distiller",
    "LossTerms",
    "MethodSpec",
    "make_distiller",
    "register",
    "student_loss",
]
