"""Centered kernel alignment (Kornblith et al., "Similarity of Neural Network Representations
Revisited", ICML 2019), linear kernel, in float64.

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   K = X Xᵀ, L = Y Yᵀ

Feature form (centred X, Y):  ‖YᵀX‖_F² / (‖XᵀX‖_F · ‖YᵀY‖_F);  Gram form: the same through the
centred n × n Gram matrices. The debiased variant replaces HSIC with the unbiased estimator of
Song et al. (2012), as in the authors' reference colab. kdlab computes the Gram form: n × n
matrices (n = extract.n_samples), one per layer, whatever the layer's width (a feature map of
stage1 has thousands of dimensions; tests check it against the feature form).
"""

from __future__ import annotations

import torch


def _as64(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, d) float64."""
    return x.reshape(len(x), -1).to(torch.float64)


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, n) linear Gram matrix in float64."""
    x_nd = _as64(x)
    return x_nd @ x_nd.T


def center_gram(gram_nn: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/n."""
    means = gram_nn.mean(dim=0)
    return gram_nn - means[None, :] - means[:, None] + means.mean()


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA from two (n, n) Gram matrices: biased HSIC, or the unbiased estimator when
    `debiased`."""
    if debiased:
        denom = torch.sqrt(unbiased_hsic(gram_x, gram_x) * unbiased_hsic(gram_y, gram_y))
        return (unbiased_hsic(gram_x, gram_y) / denom).item()
    kx, ky = center_gram(gram_x), center_gram(gram_y)
    hsic = (kx * ky).sum()
    return (hsic / torch.sqrt((kx * kx).sum() * (ky * ky).sum())).item()


def unbiased_hsic(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC of two (n, n) Gram matrices (n > 3), up to a constant."""
    n = gram_x.shape[0]
    kx = gram_x - torch.diag(torch.diagonal(gram_x))
    ky = gram_y - torch.diag(torch.diagonal(gram_y))
    trace = (kx * ky).sum()
    sums = kx.sum() * ky.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (kx.sum(dim=0) @ ky.sum(dim=0))
    return (trace + sums - cross) / (n * (n - 3))


def cka_matrix(
    teacher_acts: dict[str, torch.Tensor], student_acts: dict[str, torch.Tensor], debiased=False
) -> tuple[list[str], list[str], list[list[float]]]:
    """Teacher-layer × student-layer CKA via Gram matrices (each computed once)."""
    grams_t = {name: gram_linear(a) for name, a in teacher_acts.items()}
    grams_s = {name: gram_linear(a) for name, a in student_acts.items()}
    rows = [[cka_from_grams(gram_t, gram_s, debiased) for gram_s in grams_s.values()]
            for gram_t in grams_t.values()]  # fmt: skip
    return list(grams_t), list(grams_s), rows
