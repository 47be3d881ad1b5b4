"""`at`: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.

    Q(A) = vec( mean_c |A_c|^p ) / ‖vec( mean_c |A_c|^p )‖₂        (spatial attention map)
    L    = Σ_stages mean_batch ‖Q(S_j) − Q(T_j)‖₂²

over the chosen stage outputs S_j, T_j of student and teacher (p = 2 by default). Where the two
maps differ in size, the larger is average-pooled to the smaller one's size first. The squared
distance is summed over positions (not averaged, as the authors' code does): Q is a unit
vector, so this keeps L independent of the resolution, and one default weight fits 8×8 digits
and 64×64 TinyImageNet alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, match_spatial, register
from kdlab.distill.specs.at import ATParams


def attention_map(features: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W): channel mean of |f|^p, flattened, L2-normalised."""
    return F.normalize(features.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


@register("at", ATParams)
class AttentionTransfer(Distiller):
    def loss(self, student, teacher, batch):
        total = 0.0
        for name in self.params.stages:
            s, t = match_spatial(student.stages[name], teacher.stages[name].detach())
            diff = attention_map(s, self.params.p) - attention_map(t, self.params.p)
            total = total + diff.pow(2).sum(dim=1).mean()
        return total
