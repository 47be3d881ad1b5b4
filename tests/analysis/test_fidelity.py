"""Fidelity (top-1 agreement, KL(teacher ‖ student)) and ECE against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdlab.analysis.fidelity import (
    expected_calibration_error,
    fidelity_metrics,
    mean_kl,
    top1_agreement,
)

# two images, two classes; probabilities chosen by hand, logits = their logs
P_TEACHER = np.array([[0.25, 0.75], [0.75, 0.25]])
P_STUDENT = np.array([[0.4, 0.6], [0.4, 0.6]])
LABELS = np.array([1, 1])


def test_agreement_and_kl():
    teacher, student = np.log(P_TEACHER), np.log(P_STUDENT) + 3.0  # logits up to a constant
    assert top1_agreement(teacher, student) == 0.5
    kl_1 = 0.25 * math.log(0.25 / 0.4) + 0.75 * math.log(0.75 / 0.6)
    kl_2 = 0.75 * math.log(0.75 / 0.4) + 0.25 * math.log(0.25 / 0.6)
    assert mean_kl(teacher, student) == pytest.approx((kl_1 + kl_2) / 2, rel=1e-12)
    assert mean_kl(teacher, teacher) == pytest.approx(0.0, abs=1e-12)


def test_ece():
    # teacher: confidence 0.75 on both, one right -> one bin, |0.5 - 0.75|
    assert expected_calibration_error(np.log(P_TEACHER), LABELS) == pytest.approx(0.25)
    # student: confidence 0.6 on both, both right -> |1 - 0.6|
    assert expected_calibration_error(np.log(P_STUDENT), LABELS) == pytest.approx(0.4)
    # two bins: 0.95 right (bin 15) and 0.55 wrong (bin 9): (0.05 + 0.55) / 2
    logits = np.log(np.array([[0.05, 0.95], [0.55, 0.45]]))
    assert expected_calibration_error(logits, np.array([1, 1])) == pytest.approx(0.3)


def test_metric_names():
    metrics = fidelity_metrics(np.log(P_TEACHER), np.log(P_STUDENT), LABELS)
    assert sorted(metrics) == [
        "calibration/ece/student", "calibration/ece/teacher",
        "fidelity/kl_teacher_student", "fidelity/top1_agreement"]  # fmt: skip
    assert metrics["calibration/ece/teacher"] == pytest.approx(0.25)
