"""Every KD method by name: imports each module of this package, so each one registers itself.

Adding a method is adding one file to `kdlab/distill/` that defines a `Distiller` subclass
decorated with `@register("<name>", <ParamsDataclass>)`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import kdlab.distill
from kdlab.distill.base import METHODS, Distiller, MethodSpec, PairInfo
from kdlab.errors import ConfigError

DYNAMIC_IMPORTS = ("kdlab.distill",)
"""Packages whose every module this module imports by name (read by kdlab.codedeps)."""

for _module in pkgutil.iter_modules(kdlab.distill.__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"kdlab.distill.{_module.name}")


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


@functools.cache
def probe_pair(dataset: str, teacher_arch: str, student_arch: str) -> tuple[PairInfo, tuple, tuple]:
    """Both networks' shapes on the dataset's images, and their extractable layers (teacher,
    student); cached, since a grid asks for the same pair many times."""
    from kdlab.data.datasets import DATASETS
    from kdlab.models import make_model

    spec = DATASETS[dataset]
    height, _, channels = spec.image_shape
    student, teacher = (make_model(arch, channels, spec.num_classes, height)
                        for arch in (student_arch, teacher_arch))  # fmt: skip
    pair = PairInfo.probe(student, teacher, spec.image_shape)
    return pair, tuple(teacher.hook_points()), tuple(student.hook_points())


def check_method_fits_models(params) -> None:
    """Refuse a KD method that cannot serve this teacher/student pair, saying why."""
    if params.kd.method == "none":
        return
    pair, _, _ = probe_pair(params.data.name, params.teacher.arch, params.student.arch)
    get_method(params.kd.method).cls.check(params.kd.method_params, pair)


def load_checked_params(path="params.yaml"):
    """params.yaml validated field by field, `kd` against every registered method, and the
    selected KD method checked against the teacher/student pair."""
    from kdlab.config import load_params

    params = load_params(path, methods=METHODS)
    check_method_fits_models(params)
    return params


def params_from_dict(raw):
    """kdlab.config.params_from_dict with every registered method's `kd.<method>` section."""
    from kdlab import config

    return config.params_from_dict(raw, METHODS)
