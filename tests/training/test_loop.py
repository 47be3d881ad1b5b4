"""The loop's pieces: schedules, optimizer, evaluation without side effects, one training epoch."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.data.loader import BatchLoader, load_dataset
from kdlab.distill.registry import make_distiller, params_from_dict
from kdlab.models import make_model
from kdlab.training.loop import (
    LossSetup,
    TrainState,
    evaluate,
    make_optimizer,
    make_scheduler,
    train_one_epoch,
)

from ..conftest import tiny_params


def lrs_over(cfg, epochs: int) -> list[float]:
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg, torch.device("cpu"))
    scheduler = make_scheduler(optimizer, cfg)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_per_epoch():
    cfg = params_from_dict(tiny_params(**{"teacher.epochs": 4, "teacher.lr": 0.2})).teacher
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs_over(cfg, 4) == pytest.approx(expected)


def test_multistep_schedule_per_epoch():
    overrides = {"teacher.epochs": 6, "teacher.lr": 0.1, "teacher.schedule": "multistep",
                 "teacher.milestones": [2, 4], "teacher.gamma": 0.5}  # fmt: skip
    cfg = params_from_dict(tiny_params(**overrides)).teacher
    assert lrs_over(cfg, 6) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_evaluate_has_no_side_effects(digits_dir):
    data = load_dataset(digits_dir)
    model = make_model("resnet8", 1, 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = BatchLoader(data.test, 100, data.meta["mean"], data.meta["std"], train=False)
    metrics = evaluate(model, loader, torch.device("cpu"))
    assert set(metrics) == {"loss", "acc"} and 0.0 <= metrics["acc"] <= 1.0
    assert not model.training  # evaluation switches to eval mode: BN statistics untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_one_epoch_of_distillation_moves_the_student_only(digits_dir):
    data = load_dataset(digits_dir)
    params = params_from_dict(tiny_params())
    student, teacher = make_model("resnet8", 1, 10), make_model("resnet8", 1, 10).eval()
    teacher.requires_grad_(False)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = make_distiller("logit", params.kd.method_params)
    optimizer = make_optimizer(list(student.parameters()), params.student, torch.device("cpu"))
    state = TrainState(student, distiller, optimizer, make_scheduler(optimizer, params.student))
    loader = BatchLoader(data.train, 128, data.meta["mean"], data.meta["std"], train=True, seed=0)
    weight_before = student.fc.weight.detach().clone()
    metrics = train_one_epoch(state, LossSetup(alpha=0.5, label_smoothing=0.0, teacher=teacher),
                              loader, torch.device("cpu"))  # fmt: skip
    assert set(metrics) == {"loss", "ce", "kd", "acc"}
    expected = 0.5 * metrics["ce"] + 0.5 * distiller.weight * metrics["kd"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert not torch.equal(student.fc.weight, weight_before)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


def test_fitnets_hint_pretraining_fits_the_hint_before_kd(digits_dir):
    from kdlab.distill.base import PairInfo
    from kdlab.models import probe_shapes
    from kdlab.training.loop import pretrain_student

    data = load_dataset(digits_dir)
    params = params_from_dict(tiny_params(**{"kd.method": "fitnets", "kd.fitnets.hint_epochs": 3}))
    torch.manual_seed(0)
    student, teacher = make_model("resnet8", 1, 10), make_model("resnet20", 1, 10).eval()
    teacher.requires_grad_(False)
    pair = PairInfo(probe_shapes(student, 1, 8, 8), probe_shapes(teacher, 1, 8, 8))
    distiller = make_distiller("fitnets", params.kd.method_params, pair)
    assert distiller.pretraining_epochs() == 3
    optimizer = make_optimizer(
        [*student.parameters(), *distiller.parameters()], params.student, torch.device("cpu")
    )
    state = TrainState(student, distiller, optimizer, make_scheduler(optimizer, params.student))
    loader = BatchLoader(data.train, 128, data.meta["mean"], data.meta["std"], train=True, seed=0)
    test_x = BatchLoader(data.test, 360, data.meta["mean"], data.meta["std"], train=False)
    (images, _, _, _), = list(test_x)  # fmt: skip

    def hint_loss() -> float:
        student.eval(), distiller.eval()
        with torch.no_grad():
            return distiller.pretrain_loss(student.forward_features(images),
                                           teacher.forward_features(images)).item()  # fmt: skip

    before = hint_loss()
    fc_before = student.fc.weight.detach().clone()
    pretrain_student(state, LossSetup(alpha=0.5, label_smoothing=0.0, teacher=teacher), loader,
                    torch.device("cpu"))  # fmt: skip
    assert hint_loss() < 0.5 * before
    assert torch.equal(student.fc.weight, fc_before)  # past the guided layer: untouched
    assert state.epoch == 0  # pre-training is not a training epoch


def test_frozen_teacher_outputs_are_ordinary_tensors_without_grad():
    from kdlab.training.loop import frozen_features

    teacher = make_model("resnet8", 1, 10).eval().requires_grad_(False)
    images = torch.randn(4, 1, 8, 8)
    features = frozen_features(teacher, images, inference=True)
    tensors = [*features.stages.values(), features.embedding, features.logits]
    # Inference tensors would fail in the student's backward; these are plain copies.
    assert not any(t.is_inference() or t.requires_grad for t in tensors)
    assert torch.equal(features.logits, teacher(images))


def _train(digits_dir, method: str, compile: bool, epochs: int):
    from kdlab.distill.base import PairInfo
    from kdlab.training.loop import make_step_functions

    data = load_dataset(digits_dir)
    params = params_from_dict(tiny_params(**{"kd.method": method}))
    torch.manual_seed(0)
    student, teacher = make_model("resnet8", 1, 10), make_model("resnet8", 1, 10).eval()
    teacher.requires_grad_(False)
    pair = PairInfo.probe(student, teacher, (8, 8, 1))
    distiller = make_distiller(method, params.kd.method_params, pair)
    cpu = torch.device("cpu")
    optimizer = make_optimizer([*student.parameters(), *distiller.parameters()], params.student,
                               cpu)  # fmt: skip
    state = TrainState(student, distiller, optimizer, make_scheduler(optimizer, params.student))
    loss_setup = LossSetup(alpha=0.5, label_smoothing=0.0, teacher=teacher)
    steps = make_step_functions(state, loss_setup, cpu, compile=compile)
    mean, std = data.meta["mean"], data.meta["std"]
    loader = BatchLoader(data.train, 128, mean, std, train=True, seed=0, crop_padding=1)
    history = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        history.append(train_one_epoch(state, loss_setup, loader, cpu, steps))
    test = BatchLoader(data.test, 256, mean, std, train=False)  # 360 images: two batch sizes
    return history, student, steps, test


def test_compiled_step_trains_like_the_eager_one(digits_dir):
    """`<role>.compile: true` on CPU: the same epoch up to floating-point reassociation, and a
    compiled evaluation equal to the eager one on the same weights."""
    (eager,), *_ = _train(digits_dir, "at", compile=False, epochs=1)
    (compiled,), student, steps, test = _train(digits_dir, "at", compile=True, epochs=1)
    for key in ("loss", "ce", "kd"):
        assert eager[key] == pytest.approx(compiled[key], rel=1e-3), key
    assert eager["acc"] == pytest.approx(compiled["acc"], abs=0.01)  # a near-tie may flip
    cpu = torch.device("cpu")
    plain, fast = evaluate(student, test, cpu), evaluate(student, test, cpu, steps.evaluate)
    assert steps.compiled and fast["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    assert fast["acc"] == pytest.approx(plain["acc"], abs=1 / 360)


def test_compile_param_defaults_to_cuda_only():
    cfg = params_from_dict(tiny_params()).student
    assert cfg.compile == "auto"
    assert cfg.use_compile("cuda") and not cfg.use_compile("cpu")
    forced = params_from_dict(tiny_params(**{"student.compile": True})).student
    assert forced.use_compile("cpu")
