"""Logit KD (Hinton et al. 2015) and the student loss weighting."""

from __future__ import annotations

import math
import re

import pytest
import torch

from kdlab.data.loader import Batch
from kdlab.distill.base import student_loss
from kdlab.distill.logit import LogitParams, kl_logit_loss
from kdlab.distill.registry import METHODS, make_distiller
from kdlab.errors import ConfigError
from kdlab.models import Features, make_model


def _features(logits: torch.Tensor) -> Features:
    return Features(stages={}, embedding=torch.zeros(len(logits), 1), logits=logits)


def test_hand_computed_value():
    # z_s = (1, 2, 3), z_t = (3, 2, 1), T = 2: p = softmax(z / T); L = T²·Σ p_t·log(p_t / p_s).
    # 1.2806266713192258 was computed once with Python's math module (no torch).
    z_s = torch.tensor([[1.0, 2.0, 3.0]])
    z_t = torch.tensor([[3.0, 2.0, 1.0]])
    assert kl_logit_loss(z_s, z_t, temperature=2.0).item() == pytest.approx(
        1.2806266713192258, rel=1e-6
    )


def test_matches_formula_on_a_batch():
    torch.manual_seed(0)
    z_s, z_t, temperature = torch.randn(5, 7), torch.randn(5, 7), 3.0
    expected = 0.0
    for row_s, row_t in zip(z_s.tolist(), z_t.tolist(), strict=True):
        exp_s = [math.exp(v / temperature) for v in row_s]
        exp_t = [math.exp(v / temperature) for v in row_t]
        p_s = [v / sum(exp_s) for v in exp_s]
        p_t = [v / sum(exp_t) for v in exp_t]
        expected += sum(t * math.log(t / s) for s, t in zip(p_s, p_t, strict=True))
    expected = expected / len(z_s) * temperature**2
    assert kl_logit_loss(z_s, z_t, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_zero_for_identical_logits():
    z = torch.randn(8, 10)
    assert kl_logit_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def batch_of(labels: torch.Tensor) -> Batch:
    return Batch(torch.empty(len(labels), 0), labels, torch.arange(len(labels)))


def test_gradient_reaches_the_student_and_never_the_teacher():
    student = make_model("resnet8", 1, 10)
    teacher = make_model("resnet8", 1, 10)
    teacher.requires_grad_(False)  # as the pipeline freezes it
    x, labels = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    distiller = make_distiller("logit", LogitParams(temperature=4.0))
    # Even a teacher output that does require grad must not receive any through the KD term.
    t_logits = teacher(x).detach().requires_grad_(True)
    terms = student_loss(distiller, 0.5, student.forward_features(x), _features(t_logits),
                         Batch(x, labels, torch.arange(4)))  # fmt: skip
    terms.total.backward()
    assert t_logits.grad is None
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.fc.parameters())


def test_student_loss_is_the_alpha_mixture():
    torch.manual_seed(1)
    z_s, z_t, labels = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    distiller = make_distiller("logit", LogitParams(temperature=2.0, weight=3.0))
    terms = student_loss(distiller, 0.25, _features(z_s), _features(z_t), batch_of(labels))
    ce = torch.nn.functional.cross_entropy(z_s, labels)
    kd = kl_logit_loss(z_s, z_t, 2.0)
    assert terms.total.item() == pytest.approx((0.75 * ce + 0.25 * 3.0 * kd).item(), rel=1e-6)


def test_pure_baseline_is_cross_entropy_with_label_smoothing():
    z_s, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    terms = student_loss(
        make_distiller("none"), 0.9, _features(z_s), None, batch_of(labels), label_smoothing=0.1
    )
    expected = torch.nn.functional.cross_entropy(z_s, labels, label_smoothing=0.1)
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not METHODS["none"].cls.needs_teacher


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=re.escape(f"kd.method must be one of {', '.join(sorted(METHODS))}, got 'kdd'"),
    ):
        make_distiller("kdd")
