"""Class separability: the Fisher criterion trace(S_B) / trace(S_W) (float64).

S_B = Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ is the between-class scatter and
S_W = Σ_c Σ_{i ∈ c} (x_i − μ_c)(x_i − μ_c)ᵀ the within-class one; only their traces are needed,
so no d × d matrix is formed.
"""

from __future__ import annotations

import torch


def fisher_criterion(acts: torch.Tensor, labels: torch.Tensor) -> float:
    """acts (n, ...), labels (n,) -> trace(S_B) / trace(S_W)."""
    x_nd = acts.reshape(len(acts), -1).to(torch.float64)
    labels = labels.to(x_nd.device)
    mean = x_nd.mean(dim=0)
    between = within = torch.zeros((), dtype=torch.float64, device=x_nd.device)
    for label in labels.unique():
        members = x_nd[labels == label]
        class_mean = members.mean(dim=0)
        between = between + len(members) * ((class_mean - mean) ** 2).sum()
        within = within + ((members - class_mean) ** 2).sum()
    return (between / within).item()
