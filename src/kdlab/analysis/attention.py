"""What attention heads do: entropy, distance, class-token attention, rollout, and how a student's
heads match a teacher's. Pure functions of attention weights A (N, heads, T, T), rows = queries,
float64; the first token is the class token, the others a square grid of patches.

Padding: `key_padding_mask` (N, T), True where a token is padding (the convention of
`nn.MultiheadAttention`). Masked keys get no weight (rows renormalised over the valid keys) and
masked queries are left out of every average, so a measure of a padded batch equals that of the
valid tokens alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TINY = 1e-300


def valid_rows(attn: torch.Tensor, key_padding_mask: torch.Tensor | None):
    """(A with masked keys zeroed and rows renormalised, valid-query weights (N, 1, T))."""
    a = attn.to(torch.float64)
    if key_padding_mask is None:
        return a, torch.ones(a.shape[0], 1, a.shape[2], dtype=a.dtype, device=a.device)
    valid = (~key_padding_mask).to(a.dtype)  # (N, T)
    a = a * valid[:, None, None, :]
    a = a / a.sum(-1, keepdim=True).clamp_min(TINY)
    return a, valid[:, None, :]


def query_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, H, Q) per-query values -> (H,) mean over samples and valid queries."""
    return (values * weights).sum((0, 2)) / weights.sum((0, 2))


def attention_entropy(attn: torch.Tensor, key_padding_mask: torch.Tensor | None = None):
    """(H,) entropy in nats of each query's attention over the valid keys, −Σ_k a_qk ln a_qk,
    averaged over valid queries and samples. 0: every query looks at one token; ln(T): uniform."""
    a, weights = valid_rows(attn, key_padding_mask)
    plogp = torch.where(a > 0, a * torch.log(a.clamp_min(TINY)), torch.zeros_like(a))
    return query_mean(-plogp.sum(-1), weights)


def patch_grid(tokens: int) -> torch.Tensor:
    """(P, 2) row/column of each patch token (tokens = 1 class token + P = side² patches)."""
    side = math.isqrt(tokens - 1)
    if side * side != tokens - 1:
        raise ValueError(f"{tokens} tokens are not a class token and a square grid of patches")
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], 1).to(torch.float64)


def mean_attention_distance(attn: torch.Tensor, key_padding_mask: torch.Tensor | None = None):
    """(H,) the expected distance, in patches, between a patch query and the patches it attends
    to: Σ_k a_qk ‖pos_q − pos_k‖ with a renormalised over the (valid) patch keys, averaged over
    valid patch queries and samples (Dosovitskiy et al. 2021, fig. 7)."""
    mask = None if key_padding_mask is None else key_padding_mask[:, 1:]
    a, weights = valid_rows(attn[:, :, 1:, 1:], mask)
    a = a / a.sum(-1, keepdim=True).clamp_min(TINY)  # over patches only
    grid = patch_grid(attn.shape[-1]).to(a.device)
    distance = torch.cdist(grid, grid)  # (P, P)
    return query_mean((a * distance).sum(-1), weights)


def cls_patch_attention(attn: torch.Tensor, key_padding_mask: torch.Tensor | None = None):
    """(H,) the class token's attention on the (valid) patches, Σ_{k ≥ 1} a_0k, sample mean."""
    a, _ = valid_rows(attn, key_padding_mask)
    return a[:, :, 0, 1:].sum(-1).mean(0)


def head_divergence(teacher: torch.Tensor, student: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """(H_t, H_s) Jensen–Shannon divergence (nats, ≤ ln 2) between each teacher head's and each
    student head's attention distributions, averaged over valid queries and samples. Both on
    the same samples and tokens (the same images and patch grid)."""
    a_t, weights = valid_rows(teacher, key_padding_mask)
    a_s, _ = valid_rows(student, key_padding_mask)
    rows = []
    for h in range(a_t.shape[1]):
        p = a_t[:, h : h + 1]  # (N, 1, T, T) against every student head
        m = 0.5 * (p + a_s)
        js = 0.5 * (kl_rows(p, m) + kl_rows(a_s, m))  # (N, H_s, T)
        rows.append(query_mean(js, weights))
    return torch.stack(rows)


def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ_k p log(p / q) over the last axis, with 0 log 0 = 0."""
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(TINY)) - torch.log(q.clamp_min(TINY))),
                        torch.zeros_like(p))  # fmt: skip
    return terms.sum(-1)


def match_heads(divergence: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """One-to-one matching of teacher heads (rows) to student heads (columns) that minimises the
    total divergence (Hungarian; min(H_t, H_s) pairs when the counts differ). Returns the matched
    teacher and student heads and the matched similarity 1 − mean JS / ln 2, in [0, 1]."""
    from scipy.optimize import linear_sum_assignment

    cost = divergence.cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return rows, cols, float(1.0 - cost[rows, cols].mean() / math.log(2))


def paired_layers(teacher_layers: int, student_layers: int) -> list[tuple[int, int]]:
    """(teacher, student) layer indices paired by relative depth: the student's last layer with
    the teacher's last, each student layer j with teacher layer ⌈(j + 1)·L_t / L_s⌉ − 1."""
    return [(math.ceil((j + 1) * teacher_layers / student_layers) - 1, j)
            for j in range(student_layers)]  # fmt: skip


def attention_rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema (2020): (N, T, T) = Ã_L ⋯ Ã_1 with Ã = rownorm(½·mean_heads(A) + ½·I),
    the residual connection counted as attention to oneself. Row 0 is the class token's."""
    rollout = None
    for attn in layers:
        a = attn.to(torch.float64).mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout
