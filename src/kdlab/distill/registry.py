"""Every KD method by name: imports each module of this package, so each one registers itself.

Adding a method is adding `kdlab/distill/specs/<name>.py` (its `kd.<name>:` params dataclass and
the pairs it serves, torch-free, registered with `register_spec`) and `kdlab/distill/<name>.py`
(a `Distiller` subclass decorated with `@register("<name>", <ParamsDataclass>)`).
"""

from __future__ import annotations

import importlib
import pkgutil

import kdlab.distill
from kdlab import config
from kdlab.config import load_params
from kdlab.distill.base import METHODS, Distiller, MethodSpec
from kdlab.distill.spec import PairInfo, params_pair_shapes
from kdlab.distill.specs import get_spec, load_specs
from kdlab.errors import ConfigError

DYNAMIC_IMPORTS = ("kdlab.distill",)
"""Packages whose every module this module imports by name (read by kdlab.codedeps)."""

for _module in pkgutil.iter_modules(kdlab.distill.__path__):
    if _module.name not in ("base", "registry", "spec", "specs"):
        importlib.import_module(f"kdlab.distill.{_module.name}")
_ordered = sorted(METHODS.items())  # by name, whichever module was imported first
METHODS.clear()
METHODS.update(_ordered)
if set(METHODS) != set(load_specs()):
    raise RuntimeError(f"KD methods {sorted(METHODS)} and their specs {sorted(load_specs())} "
                       "differ: each method needs both files")  # fmt: skip


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
        get_spec(method).check(params, pair)
    return spec.cls(params, pair)


def check_method_fits_models(params) -> None:
    """Refuse a KD method that cannot serve this teacher/student pair, saying why."""
    if params.kd.method == "none" or params.one_model:  # no student: no KD
        return
    pair, _, _ = params_pair_shapes(params)
    get_spec(params.kd.method).check(params.kd.method_params, pair)


def load_checked_params(path="params.yaml"):
    """params.yaml validated field by field, `kd` against every registered method, and the
    selected KD method checked against the teacher/student pair."""
    params = load_params(path, methods=load_specs())
    check_method_fits_models(params)
    return params


def params_from_dict(raw):
    """kdlab.config.params_from_dict with every registered method's `kd.<method>` section."""
    return config.params_from_dict(raw, load_specs())
