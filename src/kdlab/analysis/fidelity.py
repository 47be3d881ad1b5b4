"""Does the student match its teacher? Fidelity and calibration on the whole test split.

Stanton et al. 2021 ("Does Knowledge Distillation Really Work?") separate generalisation (the
student's accuracy) from fidelity (how closely the student matches the teacher's predictions):

    fidelity/top1_agreement      fraction of test images where argmax student == argmax teacher
    fidelity/kl_teacher_student  mean over test images of KL(p_teacher ‖ p_student), nats, T = 1
    calibration/ece/<role>       expected calibration error (Guo et al. 2017): 15 equal-width
                                 confidence bins, Σ_b (n_b / N) · |accuracy_b − confidence_b|
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def top1_agreement(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
    return float(np.mean(teacher_logits.argmax(1) == student_logits.argmax(1)))


def mean_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
    """Mean KL(p_teacher ‖ p_student) over samples, in nats."""
    log_t, log_s = log_softmax(teacher_logits), log_softmax(student_logits)
    return float(np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=1)))


def expected_calibration_error(
    logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Σ over equal-width confidence bins (lo, hi] of (n_b / N)·|accuracy_b − confidence_b|."""
    probs = np.exp(log_softmax(logits))
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == np.asarray(labels)
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence >= 1/classes > 0
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def fidelity_metrics(teacher_logits: np.ndarray, student_logits: np.ndarray,
                     labels: np.ndarray) -> dict[str, float]:  # fmt: skip
    return {
        "fidelity/top1_agreement": top1_agreement(teacher_logits, student_logits),
        "fidelity/kl_teacher_student": mean_kl(teacher_logits, student_logits),
        "calibration/ece/teacher": expected_calibration_error(teacher_logits, labels),
        "calibration/ece/student": expected_calibration_error(student_logits, labels),
    }
