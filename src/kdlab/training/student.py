"""The student's side of a run: its network, the selected KD method and the frozen teacher."""

from __future__ import annotations

from pathlib import Path

import torch

from kdlab.checksum import sha256_file
from kdlab.config import Params
from kdlab.data.loader import Dataset
from kdlab.distill.base import PairInfo
from kdlab.distill.registry import make_distiller
from kdlab.errors import ConfigError
from kdlab.models import make_model
from kdlab.training.loop import LossSetup
from kdlab.training.run import RoleSetup, load_frozen_teacher


def student_setup(
    params: Params,
    dataset: Dataset,
    device: torch.device,
    teacher_path: Path | None,
    artifacts: dict[str, Path] | None = None,
) -> RoleSetup:
    """The student, its KD term for this teacher (checked against the pair) and its loss.

    `artifacts` are files made by earlier stages for the KD method (ft's paraphraser).
    """
    cfg = params.student
    method = params.kd.method
    artifacts = dict(artifacts or {})
    model = make_model(cfg.arch, dataset.in_channels, dataset.num_classes, dataset.image_size,
                       cfg.size)  # fmt: skip
    teacher, inputs = None, {}
    pair = None
    if method != "none":
        if teacher_path is None:
            raise ConfigError(f"kd.method {method} needs a teacher checkpoint")
        teacher, teacher_sha = load_frozen_teacher(teacher_path, device)
        pair = PairInfo.probe(model, teacher, dataset.input_shape, artifacts,
                              train_size=len(dataset.train))  # fmt: skip
        inputs = {name: sha256_file(path) for name, path in sorted(artifacts.items())}
        inputs["teacher"] = teacher_sha
    distiller = make_distiller(method, params.kd.method_params, pair)
    model.extras = frozenset(distiller.extras)
    if teacher is not None:
        teacher.extras = frozenset(distiller.extras)
    loss_setup = LossSetup(params.kd.alpha, params.student_label_smoothing, teacher)
    return RoleSetup(model, distiller, loss_setup, "kdlab.stages.train_student", inputs)
