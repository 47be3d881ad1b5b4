"""`nst`: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", arXiv:1707.01219, 2017.

Each channel map of a stage output, flattened over space and L2-normalised, is one sample; NST
matches the distribution of the student's channel samples {s_i} to the teacher's {t_j} with the
squared maximum mean discrepancy under the polynomial kernel k(a, b) = (aᵀb + c)^d:

    MMD² = 1/C_s² Σ_ii' k(s_i, s_i') + 1/C_t² Σ_jj' k(t_j, t_j') − 2/(C_s·C_t) Σ_ij k(s_i, t_j)

per image, averaged over the batch and summed over the chosen stages (d = 2, c = 0 by default).
Maps of different spatial size are average-pooled to the smaller one first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, match_spatial, register
from kdlab.distill.specs.nst import NSTParams


def poly_mmd2(s: torch.Tensor, t: torch.Tensor, degree: int, c: float) -> torch.Tensor:
    """s (B, C_s, N), t (B, C_t, N) with unit rows -> MMD² per image, averaged: a scalar."""

    def kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (torch.bmm(a, b.transpose(1, 2)) + c).pow(degree).mean(dim=(1, 2))  # (B,)

    return (kernel_mean(s, s) + kernel_mean(t, t) - 2 * kernel_mean(s, t)).mean()


@register("nst", NSTParams)
class NeuronSelectivityTransfer(Distiller):
    def loss(self, student, teacher, batch):
        total = 0.0
        for name in self.params.stages:
            s, t = match_spatial(
                student.stages[name].float(), teacher.stages[name].detach().float()
            )
            s = F.normalize(s.flatten(2), dim=2)  # (B, C_s, H·W)
            t = F.normalize(t.flatten(2), dim=2)  # (B, C_t, H·W)
            total = total + poly_mmd2(s, t, self.params.degree, self.params.c)
        return total
