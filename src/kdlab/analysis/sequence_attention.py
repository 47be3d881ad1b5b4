"""What the heads of a sequence transformer (SPOTER-shaped: encoder self-attention over T frames,
a decoder whose one learned class query cross-attends to the encoder's frames) do with time.

Pure functions of attention weights `attn_nhqk` (N samples, H heads, Q queries, K keys), rows =
queries, taken to float64 on their own device, and `lengths` (N,) int, the valid frames L ≥ 1 of
each sample in a batch padded to T_max:

- encoder self-attention: Q = K = T_max, valid queries q < L, valid keys k < L;
- decoder cross-attention: Q = 1 (the class query, always valid), valid keys k < L.

Every measure first zeroes each weight outside the valid (query, key) block, so whatever is
stored at padded keys or in the rows of padded queries (NaN included) never enters a result, and
a padded batch gives what its samples give at their own length. The valid rows are used as they
are: they are assumed to sum to 1 over the valid keys (softmax with a key padding mask), not
renormalised.

"Mean over samples and valid queries" is the pooled mean over every valid (sample, query) pair,
Σ_n Σ_{q<L_n} v_nq / Σ_n L_n (as `attention.query_mean`): with self-attention a sample weighs in
proportion to its length; with cross-attention (one query) it is the plain mean over samples.
"""

from __future__ import annotations

import math

import torch

TINY = 1e-300


def valid_keys(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(N, t) bool: key k of sample n is a frame, k < L_n."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def valid_queries(lengths: torch.Tensor, q: int) -> torch.Tensor:
    """(N, q) bool: query q of sample n is a frame, q < L_n; all True for q == 1 (the class
    query of cross-attention)."""
    if q == 1:
        return torch.ones(len(lengths), 1, dtype=torch.bool, device=lengths.device)
    return valid_keys(lengths, q)


def masked(attn_nhqk: torch.Tensor, lengths: torch.Tensor):
    """(A in float64 with every weight outside the valid (query, key) block set to 0,
    lengths (N,) on A's device, valid-query mask (N, Q), valid-key mask (N, K))."""
    a_nhqk = attn_nhqk.to(torch.float64)
    if a_nhqk.dim() != 4:
        raise ValueError(f"attention must be (N, H, Q, K), got shape {tuple(a_nhqk.shape)}")
    n, _, q, k = a_nhqk.shape
    lengths_n = lengths.to(device=a_nhqk.device, dtype=torch.int64)
    if lengths_n.shape != (n,):
        raise ValueError(f"lengths must be ({n},), got shape {tuple(lengths_n.shape)}")
    if n and (int(lengths_n.min()) < 1 or int(lengths_n.max()) > k):
        raise ValueError(f"lengths must lie in [1, {k}] (the keys of the attention)")
    if q != 1 and q != k:
        raise ValueError(f"expected self-attention (Q == K) or cross-attention (Q == 1), got {q=}")
    query_nq = valid_queries(lengths_n, q)
    key_nk = valid_keys(lengths_n, k)
    block_nqk = query_nq[:, :, None] & key_nk[:, None, :]
    zero = torch.zeros((), dtype=a_nhqk.dtype, device=a_nhqk.device)
    a_nhqk = torch.where(block_nqk[:, None], a_nhqk, zero)
    return a_nhqk, lengths_n, query_nq, key_nk


def query_mean(values_nhq: torch.Tensor, query_nq: torch.Tensor) -> torch.Tensor:
    """(N, H, Q) per-query values -> (H,) Σ_n Σ_{valid q} v_nhq / #valid (sample, query) pairs."""
    weight_nq = query_nq.to(values_nhq.dtype)
    values_nhq = torch.where(query_nq[:, None, :], values_nhq, torch.zeros_like(values_nhq))
    return values_nhq.sum((0, 2)) / weight_nq.sum()


def entropy_rows(a_nhqk: torch.Tensor) -> torch.Tensor:
    """(N, H, Q) −Σ_k a_qk ln a_qk over the last axis, 0·ln 0 = 0 (masked weights are 0)."""
    plogp = torch.where(a_nhqk > 0, a_nhqk * torch.log(a_nhqk.clamp_min(TINY)),
                        torch.zeros_like(a_nhqk))  # fmt: skip
    return -plogp.sum(-1)


def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ_k p_k (ln p_k − ln q_k) over the last axis, 0·ln 0 = 0 (q > 0 wherever p > 0)."""
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(TINY)) - torch.log(q.clamp_min(TINY))),
                        torch.zeros_like(p))  # fmt: skip
    return terms.sum(-1)


def js_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence in nats over the last axis (broadcasting), in [0, ln 2]:
    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q)."""
    m = 0.5 * (p + q)
    return 0.5 * (kl_rows(p, m) + kl_rows(q, m))


def head_entropy(attn_nhqk: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(H,) entropy in nats of each valid query's attention over the valid keys,
    H_q = −Σ_{k<L} a_qk ln a_qk (0·ln 0 = 0), mean over samples and valid queries.
    0: every query reads one frame; ln L: uniform over the sample's frames."""
    a_nhqk, _, query_nq, _ = masked(attn_nhqk, lengths)
    return query_mean(entropy_rows(a_nhqk), query_nq)


def normalized_head_entropy(attn_nhqk: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(H,) entropy as a fraction of its maximum, H_q / ln L (0 when L = 1), mean over samples
    and valid queries: comparable across lengths; 1 = uniform over the sample's frames."""
    a_nhqk, lengths_n, query_nq, _ = masked(attn_nhqk, lengths)
    log_len_n = torch.log(lengths_n.to(torch.float64))
    scale_n = torch.where(
        lengths_n > 1, 1.0 / log_len_n.clamp_min(TINY), torch.zeros_like(log_len_n)
    )
    return query_mean(entropy_rows(a_nhqk) * scale_n[:, None, None], query_nq)


def mean_distance(attn_nhqk: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(H,) self-attention only (Q == K): the expected distance in frames between a query and
    the frames it reads, Σ_{k<L} a_qk |q − k|, mean over samples and valid queries."""
    if attn_nhqk.shape[-2] != attn_nhqk.shape[-1]:
        raise ValueError(f"mean_distance needs self-attention, got shape {tuple(attn_nhqk.shape)}")
    a_nhqk, _, query_nq, _ = masked(attn_nhqk, lengths)
    t = a_nhqk.shape[-1]
    frame = torch.arange(t, dtype=torch.float64, device=a_nhqk.device)
    distance_qk = (frame[:, None] - frame[None, :]).abs()
    return query_mean((a_nhqk * distance_qk).sum(-1), query_nq)


def read_position(attn_nh1k: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(H,) cross-attention only (Q == 1): where in normalised time the class query reads,
    Σ_{k<L} a_k · k / (L − 1) ∈ [0, 1] (frame 0 at 0, the last frame at 1; L = 1 gives 0.5),
    mean over samples. Uniform attention gives 0.5."""
    if attn_nh1k.shape[-2] != 1:
        raise ValueError(f"read_position needs cross-attention, got shape {tuple(attn_nh1k.shape)}")
    a_nhqk, lengths_n, _, _ = masked(attn_nh1k, lengths)
    k = a_nhqk.shape[-1]
    frame_k = torch.arange(k, dtype=torch.float64, device=a_nhqk.device)
    span_n = (lengths_n - 1).to(torch.float64)
    position_nk = torch.where(span_n[:, None] > 0, frame_k[None, :] / span_n.clamp_min(1)[:, None],
                              torch.full_like(frame_k, 0.5)[None, :])  # fmt: skip
    return (a_nhqk[:, :, 0, :] * position_nk[:, None, :]).sum(-1).mean(0)


def edge_mass(
    attn_nhqk: torch.Tensor, lengths: torch.Tensor, frames: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """((H,), (H,)) the mass each valid query puts on the first and on the last m = min(frames, L)
    valid frames, Σ_{k<m} a_qk and Σ_{L−m≤k<L} a_qk, mean over samples and valid queries.
    When L ≤ frames both windows are the whole sample (both masses 1)."""
    if frames < 1:
        raise ValueError(f"frames must be ≥ 1, got {frames}")
    a_nhqk, lengths_n, query_nq, key_nk = masked(attn_nhqk, lengths)
    k = a_nhqk.shape[-1]
    frame_k = torch.arange(k, device=a_nhqk.device)
    window_n = lengths_n.clamp_max(frames)
    first_nk = (frame_k[None, :] < window_n[:, None]).to(torch.float64)
    last_nk = ((frame_k[None, :] >= (lengths_n - window_n)[:, None]) & key_nk).to(torch.float64)
    first = query_mean((a_nhqk * first_nk[:, None, None, :]).sum(-1), query_nq)
    last = query_mean((a_nhqk * last_nk[:, None, None, :]).sum(-1), query_nq)
    return first, last


def head_similarity(attn_nhqk: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(H, H) how alike two heads of one module read the frames: 1 − JS(a_i, a_j) / ln 2 between
    head i's and head j's key distributions of the same query (JS in nats, see `js_rows`), mean
    over samples and valid queries. Symmetric, diagonal 1, 0 for disjoint supports."""
    a_nhqk, _, query_nq, _ = masked(attn_nhqk, lengths)
    heads = a_nhqk.shape[1]
    rows = []
    for i in range(heads):  # one head against all: memory of one copy of A, not H copies
        js_nhq = js_rows(a_nhqk[:, i : i + 1], a_nhqk)
        rows.append(query_mean(js_nhq, query_nq))
    divergence_hh = torch.stack(rows)
    divergence_hh = 0.5 * (divergence_hh + divergence_hh.T)  # exact symmetry against rounding
    divergence_hh.fill_diagonal_(0.0)
    return 1.0 - divergence_hh / math.log(2)


def milestone_change(
    attn_a: torch.Tensor, attn_b: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(H,) how much each head changed between two epochs (or any two models) on the same
    samples: JS(a_q, b_q) in nats ∈ [0, ln 2] between the same head's key distributions of the
    same query, mean over samples and valid queries. 0 iff unchanged; symmetric in a and b."""
    if attn_a.shape != attn_b.shape:
        raise ValueError(f"shapes differ: {tuple(attn_a.shape)} and {tuple(attn_b.shape)}")
    a_nhqk, _, query_nq, _ = masked(attn_a, lengths)
    b_nhqk, _, _, _ = masked(attn_b, lengths)
    return query_mean(js_rows(a_nhqk, b_nhqk), query_nq)


def time_bins(lengths: torch.Tensor, k: int, bins: int) -> torch.Tensor:
    """(N, k, bins) share of frame k of sample n that falls in each of `bins` equal bins of
    normalised time: frame k covers [k/L, (k+1)/L), bin b covers [b/B, (b+1)/B), and the share
    is |overlap| · L (exact integer arithmetic in units of 1/(L·B)). Each valid frame's shares sum
    to 1; padded frames (k ≥ L) get none."""
    lengths_n = lengths.to(torch.int64)
    frame_k = torch.arange(k, device=lengths.device)
    bin_b = torch.arange(bins, device=lengths.device)
    start = torch.maximum(
        frame_k[None, :, None] * bins, bin_b[None, None, :] * lengths_n[:, None, None]
    )
    stop = torch.minimum((frame_k[None, :, None] + 1) * bins,
                         (bin_b[None, None, :] + 1) * lengths_n[:, None, None])  # fmt: skip
    overlap_nkb = (stop - start).clamp_min(0)
    overlap_nkb = overlap_nkb * (frame_k[None, :] < lengths_n[:, None])[:, :, None]
    return overlap_nkb.to(torch.float64) / bins


def time_profile(attn_nh1k: torch.Tensor, lengths: torch.Tensor, bins: int = 20) -> torch.Tensor:
    """(N, H, bins) each sample's class-query cross-attention on `bins` equal bins of normalised
    time, so that samples of different lengths can be averaged and drawn together:
    P_nhb = Σ_{k<L} a_nhk · |[k/L, (k+1)/L) ∩ [b/B, (b+1)/B)| · L, each frame's mass spread over
    the bins its time span covers. Every row sums to 1. When no frame straddles a bin edge (L a
    multiple of B) this is frame k's whole mass in the bin of its centre (k + 0.5)/L; unlike that
    point assignment it leaves no empty bins when L < B, and the last frame always reaches the
    last bin (all of it there once L ≥ B)."""
    if attn_nh1k.shape[-2] != 1:
        raise ValueError(f"time_profile needs cross-attention, got shape {tuple(attn_nh1k.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")
    a_nhqk, lengths_n, _, _ = masked(attn_nh1k, lengths)
    share_nkb = time_bins(lengths_n, a_nhqk.shape[-1], bins)
    return torch.einsum("nhk,nkb->nhb", a_nhqk[:, :, 0, :], share_nkb)
