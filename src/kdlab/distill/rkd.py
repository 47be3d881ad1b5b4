"""`rkd`: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019.

On the pooled embeddings e (B, D) of student and teacher:

    ψ_D(i, j)    = ‖e_i − e_j‖₂ / μ,     μ = mean of ‖e_i − e_j‖₂ over pairs i ≠ j
    ψ_A(i, j, k) = ⟨ (e_i − e_j)/‖e_i − e_j‖₂ , (e_k − e_j)/‖e_k − e_j‖₂ ⟩   (angle at j)
    L = w_D · mean_ij huber(ψ_D^s − ψ_D^t) + w_A · mean_ijk huber(ψ_A^s − ψ_A^t)

with huber = smooth-L1. The angle term is the true triplet angle, not a pairwise cosine. The
paper's weights (25, 50) assume its own loss scale; here the ratio is kept (distance_weight 1,
angle_weight 2) and the overall weight is chosen so the term does not drown cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, register
from kdlab.distill.specs.rkd import RKDParams


def distance_potential(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) pairwise distances divided by their mean over i ≠ j."""
    dist = torch.cdist(e, e)
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return dist / dist[off_diagonal].mean().clamp_min(1e-12)


def angle_potential(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B): [j, i, k] = cos of the angle at vertex j between e_i and e_k."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # [j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2))


@register("rkd", RKDParams)
class RelationalKD(Distiller):
    def loss(self, student, teacher, batch):
        e_s = student.embedding.float()
        e_t = teacher.embedding.detach().float()
        with torch.no_grad():
            d_t, a_t = distance_potential(e_t), angle_potential(e_t)
        loss_d = F.smooth_l1_loss(distance_potential(e_s), d_t)
        loss_a = F.smooth_l1_loss(angle_potential(e_s), a_t)
        return self.params.distance_weight * loss_d + self.params.angle_weight * loss_a
