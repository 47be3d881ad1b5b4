"""`logit`: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

    L = T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) ),  averaged over the batch,

where z_s, z_t are student and teacher logits and T the temperature. The T² factor keeps the
gradient scale of the soft term independent of T (Hinton et al., §2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, register
from kdlab.distill.specs.logit import LogitParams


def kl_logit_loss(
    logits_s: torch.Tensor, logits_t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(p_t ‖ p_s) at temperature T, batch mean; logits (B, K). Computed in float32."""
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_p_t = F.log_softmax(logits_t.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


@register("logit", LogitParams)
class LogitKD(Distiller):
    def loss(self, student, teacher, batch):
        return kl_logit_loss(student.logits, teacher.logits, self.params.temperature)
