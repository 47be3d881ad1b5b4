"""Effective dimensionality of a representation, from its PCA spectrum (float64).

    participation ratio  PR = (Σ λ_i)² / Σ λ_i²                    (Gao et al. 2017)
    entropy effective rank  ER = exp(−Σ p_i log p_i),  p_i = λ_i / Σ λ_j   (Roy & Vetterli 2007)

Both equal d for isotropic data in d dimensions and k for data spread evenly over k directions.
"""

from __future__ import annotations

import torch


def pca_spectrum(acts: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> eigenvalues of the covariance, descending, float64 (length min(n−1, d))."""
    x_nd = acts.reshape(len(acts), -1).to(torch.float64)
    x_nd = x_nd - x_nd.mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(x_nd)  # the Gram/covariance trick, without forming either
    return (singular**2 / (len(x_nd) - 1))[: len(x_nd) - 1]


def participation_ratio(spectrum: torch.Tensor) -> float:
    return (spectrum.sum() ** 2 / (spectrum**2).sum()).item()


def entropy_effective_rank(spectrum: torch.Tensor) -> float:
    p = spectrum / spectrum.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum()).item()
