"""DKD against the authors' reference (mdistiller's `dkd_loss`, restated below) and its warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.loader import Batch
from kdlab.distill.registry import make_distiller
from kdlab.distill.specs.dkd import DKDParams
from kdlab.models import Features


def mdistiller_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    """mdistiller/distillers/DKD.py (megvii-research, MIT licence), restated: probabilities
    summed into [target, rest], NCKD through a softmax with the target logit pushed down by
    1000, `size_average=False` KL divided by the batch size."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(t):
        parts = [(t * gt_mask).sum(1, keepdim=True), (t * other_mask).sum(1, keepdim=True)]
        return torch.cat(parts, dim=1)

    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1))
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1))
    tckd = (F.kl_div(torch.log(pred_student), pred_teacher, reduction="sum")
            * temperature**2 / target.shape[0])  # fmt: skip
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
            * temperature**2 / target.shape[0])  # fmt: skip
    return alpha * tckd + beta * nckd


def features(logits: torch.Tensor) -> Features:
    return Features({}, torch.zeros(len(logits), 1), logits)


@pytest.mark.parametrize(
    ("alpha", "beta", "temperature", "classes"),
    [(1.0, 8.0, 4.0, 100), (0.5, 2.0, 1.0, 10), (2.0, 0.0, 8.0, 3)],
)
def test_dkd_equals_mdistiller(alpha, beta, temperature, classes):
    gen = torch.Generator().manual_seed(classes)
    z_s = torch.randn(16, classes, generator=gen, dtype=torch.float64) * 3
    z_t = torch.randn(16, classes, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (16,), generator=gen)
    params = DKDParams(tckd_weight=alpha, nckd_weight=beta, temperature=temperature, warmup=0)
    distiller = make_distiller("dkd", params)
    ours = distiller.loss(features(z_s), features(z_t), Batch(z_s, labels, torch.arange(16)))
    expected = mdistiller_dkd_loss(z_s, z_t, labels, alpha, beta, temperature)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dkd_is_zero_for_equal_logits_and_its_gradient_is_finite():
    z = torch.randn(8, 10) * 20  # large logits: no log(0), no inf − inf
    z_s = z.clone().requires_grad_(True)
    labels = torch.randint(0, 10, (8,))
    distiller = make_distiller("dkd", DKDParams(warmup=0))
    loss = distiller.loss(features(z_s), features(z), Batch(z, labels, torch.arange(8)))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    loss2 = distiller.loss(features(z_s * 0.5), features(z), Batch(z, labels, torch.arange(8)))
    loss2.backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0


def test_warmup_ramps_the_term_linearly_over_the_paper_epochs():
    z_s, z_t, labels = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    distiller = make_distiller("dkd", DKDParams(warmup=20))
    batch = Batch(z_s, labels, torch.arange(4))
    full = distiller.loss(features(z_s), features(z_t), batch).item() / distiller.ramp.item()
    for epoch, ramp in [(0, 1 / 20), (9, 10 / 20), (19, 1.0), (50, 1.0)]:
        distiller.begin_epoch(epoch, torch.Generator())
        assert distiller.loss(features(z_s), features(z_t), batch).item() == pytest.approx(
            ramp * full, rel=1e-6)  # fmt: skip
