"""`dkd`: Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR 2022).

Classical KD's KL splits into a target-class part and a non-target part. With p the softmax at
temperature T, t the label, b = [p_t, 1 − p_t] the binary target/rest distribution and p̂ the
softmax over the non-target classes only:

    TCKD = KL(b^T ‖ b^S),    NCKD = KL(p̂^T ‖ p̂^S),
    L = ramp(e) · T² · (α·TCKD + β·NCKD),  averaged over the batch,

with α = `tckd_weight`, β = `nckd_weight` and ramp(e) = min(e / warmup, 1) at epoch e (from 1),
as in the authors' mdistiller, whose `dkd_loss` this equals (tests/distill/test_dkd.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, register
from kdlab.distill.specs.dkd import DKDParams


def dkd_loss(
    logits_s: torch.Tensor,
    logits_t: torch.Tensor,
    labels: torch.Tensor,
    tckd_weight: float,
    nckd_weight: float,
    temperature: float,
) -> torch.Tensor:
    """T²·(α·TCKD + β·NCKD), batch mean; logits (B, K), labels (B,). Computed in float32."""
    z_s = logits_s.float() / temperature
    z_t = logits_t.detach().float() / temperature
    target = F.one_hot(labels, z_s.shape[1]).bool()
    tckd = F.kl_div(binary_log_probs(z_s, target), binary_log_probs(z_t, target),
                    reduction="batchmean", log_target=True)  # fmt: skip
    nckd = F.kl_div(F.log_softmax(non_target(z_s, target), dim=1),
                    F.log_softmax(non_target(z_t, target), dim=1),
                    reduction="batchmean", log_target=True)  # fmt: skip
    return temperature**2 * (tckd_weight * tckd + nckd_weight * nckd)


def non_target(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K − 1): each row's logits without its target class."""
    return z[~target].view(z.shape[0], z.shape[1] - 1)


def binary_log_probs(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 2): log p_target and log(1 − p_target) of softmax(z), each without cancellation."""
    log_p = F.log_softmax(z, dim=1)
    log_target = log_p[target]
    log_rest = non_target(log_p, target).logsumexp(dim=1)
    return torch.stack([log_target, log_rest], dim=1)


@register("dkd", DKDParams)
class DKD(Distiller):
    def __init__(self, params: DKDParams, pair=None) -> None:
        super().__init__(params, pair)
        # ramp(e) of the current epoch; a buffer, so a compiled step reads it without recompiling.
        self.register_buffer("ramp", torch.ones(()), persistent=False)

    def begin_epoch(self, epoch: int, generator: torch.Generator) -> None:
        warmup = self.params.warmup
        self.ramp.fill_(min((epoch + 1) / warmup, 1.0) if warmup else 1.0)

    def loss(self, student, teacher, batch):
        p = self.params
        return self.ramp * dkd_loss(student.logits, teacher.logits, batch.labels,
                                    p.tckd_weight, p.nckd_weight, p.temperature)  # fmt: skip
