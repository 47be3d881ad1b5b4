"""kdlab's loop (the pipeline's own `train_role`) against the plain reference loop on digits:
the same test accuracy within seed noise, over 3 seeds, for a pure model and for logit KD."""

from __future__ import annotations

import statistics

import pytest
import torch

from kdlab.bench.reference import (
    ReferenceData,
    ReferenceRun,
    make_reference_loader,
    reference_fit,
)
from kdlab.data.loader import load_dataset
from kdlab.distill.base import PairInfo
from kdlab.distill.registry import make_distiller, params_from_dict
from kdlab.models import make_model
from kdlab.training.loop import make_optimizer
from kdlab.training.run import RoleOutputs, load_frozen_teacher, teacher_setup, train_role
from kdlab.training.seeding import seed_everything
from kdlab.training.student import student_setup

from ..conftest import tiny_params

SEEDS = (0, 1, 2)
EPOCHS = 12


def parity_params(seed: int, method: str) -> dict:
    overrides = {"seed": seed, "kd.method": method, "kd.alpha": 0.5}
    for role in ("teacher", "student"):
        overrides |= {f"{role}.epochs": EPOCHS, f"{role}.batch_size": 64, f"{role}.save_epochs": []}
    return tiny_params(**overrides)


def kdlab_accuracy(params, data, role: str, out, teacher_path=None) -> float:
    cpu = torch.device("cpu")
    seed_everything(params.seed)
    outputs = RoleOutputs(out / "model", out / "metrics", out / "resume.pt")
    if role == "teacher":
        setup = teacher_setup(params, data)
    else:
        setup = student_setup(params, data, cpu, teacher_path)
    return train_role(role, params, data, cpu, outputs, setup)["test/acc"]


def reference_accuracy(params, data, role: str, teacher_path=None) -> float:
    cpu = torch.device("cpu")
    cfg = getattr(params, role)
    seed_everything(params.seed)
    model = make_model(cfg.arch, data.in_channels, data.num_classes, data.image_size)
    teacher, distiller, alpha, smoothing = None, make_distiller("none"), 0.0, cfg.label_smoothing
    if role == "student":
        teacher, _ = load_frozen_teacher(teacher_path, cpu)
        pair = PairInfo.probe(model, teacher, data.meta["image_shape"])
        distiller = make_distiller(params.kd.method, params.kd.method_params, pair)
        alpha, smoothing = params.kd.alpha, params.student_label_smoothing
    trainable = [*model.parameters(), *distiller.parameters()]
    run = ReferenceRun(model, distiller, make_optimizer(trainable, cfg, cpu, fast=False), alpha,
                       smoothing, teacher)  # fmt: skip
    reading = ReferenceData(data.meta["mean"], data.meta["std"],
                            params.data.resolved_crop_padding,
                            params.data.resolved_horizontal_flip)  # fmt: skip
    train = make_reference_loader(data.train, cfg.batch_size, reading, train=True, seed=params.seed)
    test = make_reference_loader(data.test, cfg.eval_batch_size, reading, train=False)
    return reference_fit(run, cfg, train, test, cpu)[-1]["test/acc"]


def assert_same_within_seed_noise(fast: list[float], plain: list[float]) -> None:
    """|mean difference| within 2 standard errors of the difference, and never over 2 points
    (a broken augmentation or normalisation costs far more on digits)."""
    variance = statistics.variance(fast) / len(fast) + statistics.variance(plain) / len(plain)
    spread = variance**0.5
    gap = abs(statistics.mean(fast) - statistics.mean(plain))
    assert gap <= max(2 * spread, 0.01) and gap <= 0.02, (fast, plain)
    assert min(fast) > 0.9 and min(plain) > 0.9, (fast, plain)


@pytest.mark.slow
def test_fast_loop_matches_reference_accuracy(digits_dir, tmp_path):
    data = load_dataset(digits_dir)
    fast, plain, fast_kd, plain_kd = [], [], [], []
    for seed in SEEDS:
        params = params_from_dict(parity_params(seed, "logit"))
        fast.append(kdlab_accuracy(params, data, "teacher", tmp_path / f"t{seed}"))
        plain.append(reference_accuracy(params, data, "teacher"))
        # Both students distil from the same kdlab-trained teacher of this seed.
        teacher_path = tmp_path / f"t{seed}" / "model" / "model.pt"
        fast_kd.append(kdlab_accuracy(params, data, "student", tmp_path / f"s{seed}", teacher_path))
        plain_kd.append(reference_accuracy(params, data, "student", teacher_path))
    assert_same_within_seed_noise(fast, plain)
    assert_same_within_seed_noise(fast_kd, plain_kd)


def test_parity_check_catches_a_real_gap():
    with pytest.raises(AssertionError):
        assert_same_within_seed_noise([0.97, 0.975, 0.972], [0.93, 0.935, 0.94])
    assert_same_within_seed_noise([0.97, 0.975, 0.972], [0.968, 0.976, 0.971])
