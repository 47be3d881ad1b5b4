"""Reference forms of the analysis measures that kdlab computes another way."""

from __future__ import annotations

import torch

from kdlab.analysis.similarity import cka_from_grams, gram_linear


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Feature-space linear CKA of x (n, ...) and y (n, ...): ‖YcᵀXc‖_F² / (‖XcᵀXc‖_F·‖YcᵀYc‖_F)."""
    x_nd, y_nd = (t.reshape(len(t), -1).to(torch.float64) for t in (x, y))
    x_nd, y_nd = x_nd - x_nd.mean(0), y_nd - y_nd.mean(0)
    cross = torch.linalg.matrix_norm(y_nd.T @ x_nd) ** 2
    return (cross / (torch.linalg.matrix_norm(x_nd.T @ x_nd)
                     * torch.linalg.matrix_norm(y_nd.T @ y_nd))).item()  # fmt: skip


def debiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    return cka_from_grams(gram_linear(x), gram_linear(y), debiased=True)
