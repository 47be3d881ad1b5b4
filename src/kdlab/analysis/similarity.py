"""Centered kernel alignment (Kornblith et al., "Similarity of Neural Network Representations
Revisited", ICML 2019), linear kernel, in float64.

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   K = X Xᵀ, L = Y Yᵀ

Feature form (centred X, Y):  ‖YᵀX‖_F² / (‖XᵀX‖_F · ‖YᵀY‖_F);  Gram form: the same through the
centred n × n Gram matrices. The debiased variant replaces HSIC with the unbiased estimator of
Song et al. (2012), as in the authors' reference colab. `CKAAccumulator` streams minibatches and
gives exactly the full-data linear CKA (it keeps XᵀX, YᵀY, XᵀY and the sums, and centres at the
end), so n is limited by time, not memory.
"""

from __future__ import annotations

import torch


def _as64(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, d) float64."""
    return x.reshape(len(x), -1).to(torch.float64)


def _center(x_nd: torch.Tensor) -> torch.Tensor:
    return x_nd - x_nd.mean(dim=0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Feature-space linear CKA of x (n, p) and y (n, q)."""
    x_nd, y_nd = _center(_as64(x)), _center(_as64(y))
    cross = torch.linalg.matrix_norm(y_nd.T @ x_nd) ** 2
    norm_x = torch.linalg.matrix_norm(x_nd.T @ x_nd)
    norm_y = torch.linalg.matrix_norm(y_nd.T @ y_nd)
    return (cross / (norm_x * norm_y)).item()


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, n) linear Gram matrix in float64."""
    x_nd = _as64(x)
    return x_nd @ x_nd.T


def center_gram(gram_nn: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/n."""
    means = gram_nn.mean(dim=0)
    return gram_nn - means[None, :] - means[:, None] + means.mean()


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA from two (n, n) Gram matrices: biased HSIC (the Gram form of `linear_cka`), or the
    unbiased estimator when `debiased`."""
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


def debiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA with the unbiased HSIC estimator (less biased for n close to the dimension)."""
    return cka_from_grams(gram_linear(x), gram_linear(y), debiased=True)


class CKAAccumulator:
    """Exact linear CKA over minibatches: memory O(p·q + p² + q²), independent of n."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_x = self.sum_y = self.xx = self.yy = self.xy = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a minibatch: x (b, ...) and y (b, ...) of the same b samples."""
        x_bd, y_bd = _as64(x), _as64(y)
        if self.sum_x is None:
            self.sum_x, self.sum_y = x_bd.sum(0), y_bd.sum(0)
            self.xx, self.yy, self.xy = x_bd.T @ x_bd, y_bd.T @ y_bd, x_bd.T @ y_bd
        else:
            self.sum_x += x_bd.sum(0)
            self.sum_y += y_bd.sum(0)
            self.xx += x_bd.T @ x_bd
            self.yy += y_bd.T @ y_bd
            self.xy += x_bd.T @ y_bd
        self.n += len(x_bd)

    def compute(self) -> float:
        # Centering after the fact: Xcᵀ Yc = XᵀY − n·μ_x μ_yᵀ.
        mu_x, mu_y = self.sum_x / self.n, self.sum_y / self.n
        xy = self.xy - self.n * torch.outer(mu_x, mu_y)
        xx = self.xx - self.n * torch.outer(mu_x, mu_x)
        yy = self.yy - self.n * torch.outer(mu_y, mu_y)
        norm_xx, norm_yy = torch.linalg.matrix_norm(xx), torch.linalg.matrix_norm(yy)
        return (torch.linalg.matrix_norm(xy) ** 2 / (norm_xx * norm_yy)).item()


def cka_matrix(
    teacher_acts: dict[str, torch.Tensor], student_acts: dict[str, torch.Tensor], debiased=False
) -> tuple[list[str], list[str], list[list[float]]]:
    """Teacher-layer × student-layer CKA via Gram matrices (each computed once)."""
    grams_t = {name: gram_linear(a) for name, a in teacher_acts.items()}
    grams_s = {name: gram_linear(a) for name, a in student_acts.items()}
    rows = [[cka_from_grams(gram_t, gram_s, debiased) for gram_s in grams_s.values()]
            for gram_t in grams_t.values()]  # fmt: skip
    return list(grams_t), list(grams_s), rows
