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

import dataclasses

import torch
import torch.nn.functional as F

from kdlab.config import check_range
from kdlab.distill.base import (
    Distiller,
    PairInfo,
    check_stage_names,
    match_spatial,
    register,
    require_conv_maps,
)


@dataclasses.dataclass(frozen=True)
class ATParams:
    """`kd.at:`"""

    stages: tuple[str, ...] = ("stage1", "stage2", "stage3")
    """Stages (present in both networks) whose attention maps are matched."""
    p: float = 2.0
    """Exponent of |A| in the attention map."""
    weight: float = 2.0
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.p", self.p, 0, 16, low_open=True)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def attention_map(features: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W): channel mean of |f|^p, flattened, L2-normalised."""
    return F.normalize(features.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


@register("at", ATParams)
class AttentionTransfer(Distiller):
    @classmethod
    def check(cls, params: ATParams, pair: PairInfo) -> None:
        require_conv_maps("at", pair)
        check_stage_names("kd.at.stages", params.stages, pair)

    def loss(self, student, teacher, labels):
        total = 0.0
        for name in self.params.stages:
            s, t = match_spatial(student.stages[name], teacher.stages[name].detach())
            diff = attention_map(s, self.params.p) - attention_map(t, self.params.p)
            total = total + diff.pow(2).sum(dim=1).mean()
        return total
