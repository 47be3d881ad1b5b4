"""Sparse autoencoders on cached activations (after Bricken et al. 2023, "Towards
Monosemanticity"; the training recipe follows samuelstevens/saev).

    f = ReLU(W_enc (x − b_dec) + b_enc),   x̂ = W_dec f + b_dec,   L = ‖x − x̂‖² + λ‖f‖₁

The decoder's columns (the dictionary atoms) are renormalised to unit norm after every step, and
the gradient component parallel to each column is removed first, so λ cannot be dodged by
shrinking f and growing W_dec. b_dec starts at the mean of the first `init_samples` inputs.
Data order is drawn from a seeded torch.Generator: same data + seed = same SAE.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from kdlab.progress import bar


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """One SAE fit; the params users set come from `analyze:` (kdlab.config.AnalyzeConfig)."""

    expansion: int
    """Latents = expansion × input dimension."""
    l1: float
    """λ, the L1 sparsity weight (on inputs scaled to unit mean squared norm)."""
    epochs: int
    batch_size: int
    lr: float = 1e-3
    init_samples: int = 4096
    """How many samples the b_dec mean is taken over."""
    dense_threshold: float = 0.1
    """A latent active on more than this fraction of samples counts as dense."""


class SparseAutoencoder(nn.Module):
    def __init__(self, d_in: int, d_latent: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.w_enc = nn.Parameter(torch.empty(d_latent, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_latent))
        self.w_dec = nn.Parameter(torch.empty(d_in, d_latent))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        nn.init.kaiming_uniform_(self.w_dec, generator=generator)
        with torch.no_grad():
            self.normalize_decoder()
            self.w_enc.copy_(self.w_dec.T)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.w_dec /= self.w_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        if self.w_dec.grad is not None:
            parallel = (self.w_dec.grad * self.w_dec).sum(dim=0, keepdim=True)
            self.w_dec.grad -= parallel * self.w_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.w_enc.T + self.b_enc)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return f @ self.w_dec.T + self.b_dec, f


def scale_of(x_nd: torch.Tensor) -> float:
    """Inputs are divided by this so that their mean squared norm is 1 (λ is then comparable)."""
    return (x_nd.pow(2).sum(dim=1).mean().sqrt()).clamp_min(1e-12).item()


def train_sae(acts: torch.Tensor, cfg: SAEConfig, seed: int) -> tuple[SparseAutoencoder, float]:
    """Fit an SAE to (n, ...) activations; returns it and the input scale it was trained at."""
    x_nd = acts.reshape(len(acts), -1).to(torch.float32)
    scale = scale_of(x_nd)
    x_nd = x_nd / scale
    gen = torch.Generator().manual_seed(seed)  # init and data order: nothing global
    sae = SparseAutoencoder(x_nd.shape[1], cfg.expansion * x_nd.shape[1], gen).to(x_nd.device)
    with torch.no_grad():
        sae.b_dec.copy_(x_nd[: cfg.init_samples].mean(dim=0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    for _ in bar(range(cfg.epochs), "SAE", total=cfg.epochs, unit="epoch"):
        order = torch.randperm(len(x_nd), generator=gen).to(x_nd.device)
        for start in range(0, len(x_nd), cfg.batch_size):
            batch = x_nd[order[start : start + cfg.batch_size]]
            recon, f = sae(batch)
            loss = (recon - batch).pow(2).sum(dim=1).mean() + cfg.l1 * f.abs().sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_gradient()
            optimizer.step()
            sae.normalize_decoder()
    return sae.eval(), scale


@torch.no_grad()
def sae_stats(sae: SparseAutoencoder, acts: torch.Tensor, scale: float, dense_threshold: float):
    """Reconstruction R², mean L0, dead and dense latent fractions, and the latent codes (n, m)."""
    x_nd = acts.reshape(len(acts), -1).to(torch.float32) / scale
    recon, f = sae(x_nd)
    residual = (x_nd - recon).double().pow(2).sum()
    total = (x_nd - x_nd.mean(dim=0)).double().pow(2).sum()
    active = f > 0
    frequency = active.double().mean(dim=0)
    stats = {
        "r2": (1 - residual / total).item(),
        "l0": active.double().sum(dim=1).mean().item(),
        "dead_frac": (frequency == 0).double().mean().item(),
        "dense_frac": (frequency > dense_threshold).double().mean().item(),
    }
    return stats, f


def dictionary_match(codes_a: torch.Tensor, codes_b: torch.Tensor) -> float:
    """For each live latent of A, the max cosine of its activation pattern over the shared
    samples with any latent of B; the mean over A's live latents.

    Atoms of two networks live in spaces of different dimension, so they are compared by what
    they respond to (the n-vector of activations), not by their decoder directions.
    """
    a = codes_a.double()
    b = codes_b.double()
    a = a[:, a.abs().sum(dim=0) > 0]
    b = b[:, b.abs().sum(dim=0) > 0]
    if a.shape[1] == 0 or b.shape[1] == 0:
        return 0.0
    a = a / a.norm(dim=0, keepdim=True)
    b = b / b.norm(dim=0, keepdim=True)
    return (a.T @ b).max(dim=1).values.mean().item()
