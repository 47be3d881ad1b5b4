"""What validation knows of the KD methods without torch: each method's params and the
teacher/student pairs it can serve.

Each method's `kd.<method>:` params dataclass and its `check(params, pair)` live in
`kdlab/distill/specs/<method>.py`, which imports nothing heavy; its loss (an `nn.Module`) lives
in `kdlab/distill/<method>.py`. `kdlab.distill.specs.load_specs()` imports every spec module
(this module does not, so the teacher stage, which needs only `PairInfo`, depends on no
method's params). `kdlab check`, `kdlab grid queue` and `kdlab slurm submit` validate through
this module and the networks' computed shapes (kdlab.architectures), so they never import torch
(the `check` stage does, only to see that a requested CUDA device exists).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kdlab.architectures import ShapeInfo, Size, feature_shapes, layer_names, size_items
from kdlab.config import NO_STUDENT
from kdlab.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PairInfo:
    """What a method may adapt to: the feature shapes of both networks, and prepared artefacts."""

    student: ShapeInfo
    teacher: ShapeInfo
    artifacts: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    """Files made by earlier stages for this method (e.g. ft's pre-trained paraphraser)."""
    train_size: int = 0
    """Samples in the training split (batches' indices are below it); 0 = unknown (validation)."""

    @classmethod
    def probe(cls, student, teacher, image_shape, artifacts=None, train_size=0) -> PairInfo:
        """Read two built networks' feature shapes on images of `image_shape` (H, W, C), or on
        sequences of `image_shape` (T_max, C)."""
        from kdlab.models.base import probe_shapes  # torch: the networks exist already

        if len(image_shape) == 2:
            (height, channels), width = image_shape, None
        else:
            height, width, channels = image_shape
        return cls(
            student=probe_shapes(student, channels, height, width),
            teacher=probe_shapes(teacher, channels, height, width),
            artifacts=dict(artifacts or {}),
            train_size=train_size,
        )


def serves_any_pair(params: Any, pair: PairInfo) -> None:
    """The check of a method that serves every pair (it reads only logits or embeddings)."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    params_cls: type | None
    """The `kd.<name>:` dataclass (None: the method has no params)."""
    check: Callable[[Any, PairInfo], None] = serves_any_pair
    """Raise ConfigError (one line, saying why) if the pair of networks cannot be served."""


SPECS: dict[str, MethodSpec] = {}


def register_spec(name: str, params_cls: type | None = None,
                  check: Callable[[Any, PairInfo], None] = serves_any_pair) -> None:  # fmt: skip
    """Called by kdlab/distill/specs/<name>.py: `kd.method: <name>` exists, with these params."""
    if name in SPECS:
        raise RuntimeError(f"KD method {name!r} registered twice")
    SPECS[name] = MethodSpec(name, params_cls, check)


@functools.cache
def pair_shapes(
    dataset: str, teacher_arch: str, student_arch: str, teacher_size: Size = (),
    student_size: Size = (),
) -> tuple[PairInfo, tuple, tuple]:  # fmt: skip
    """Both networks' shapes on the dataset's images (or sequences), and their extractable
    layers (teacher, student), computed (kdlab.architectures), not probed; sizes are
    `<role>.size` as `size_items`. With `student.arch: none` (a study of one model) the
    student's are None and ()."""
    from kdlab.architectures import check_arch_kind
    from kdlab.data.datasets import DATASETS

    spec = DATASETS[dataset]
    check_arch_kind("teacher.arch", teacher_arch, spec.kind, dataset)
    teacher = feature_shapes(teacher_arch, spec.num_classes, spec.input_size, teacher_size)
    if student_arch == NO_STUDENT:
        return PairInfo(None, teacher), layer_names(teacher), ()
    check_arch_kind("student.arch", student_arch, spec.kind, dataset)
    student = feature_shapes(student_arch, spec.num_classes, spec.input_size, student_size)
    return PairInfo(student, teacher), layer_names(teacher), layer_names(student)


def params_pair_shapes(params) -> tuple[PairInfo, tuple, tuple]:
    """`pair_shapes` of validated Params: dataset, both archs and their sizes."""
    sizes = (size_items(params.teacher.size), size_items(params.student.size))
    return pair_shapes(params.data.name, params.teacher.arch, params.student.arch, *sizes)


def check_stage_names(path: str, names: tuple[str, ...], pair: PairInfo) -> None:
    """Every name must be a stage of both networks."""
    for role, info in (("student", pair.student), ("teacher", pair.teacher)):
        for name in names:
            if name not in info.stages:
                raise ConfigError(
                    f"{path} names {name!r}, which the {role} does not have; "
                    f"valid: {', '.join(info.stages)}"
                )
