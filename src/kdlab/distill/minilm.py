"""`minilm`: Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
Compression of Pre-Trained Transformers" (NeurIPS 2020).

The student mimics the teacher's last self-attention layer: its attention distributions and
its value relations, per head a and query t,

    A = softmax(Q_a K_aᵀ / √d_r),   VR = softmax(V_a V_aᵀ / √d_r),
    L = 1/(A_h·|x|) Σ_a Σ_t [ KL(A^T_{a,t} ‖ A^S_{a,t}) + KL(VR^T_{a,t} ‖ VR^S_{a,t}) ],

averaged over the batch (A_h heads, |x| tokens), with Q, K, V the layer's projections of its
input and d_r the width of a head. With `relation_heads` = R the projections are re-split into R
heads of width D / R (MiniLMv2, Wang et al. 2021), which lets a teacher and a student with
different head counts be compared. With R = 0 (the default) each network's own heads are used
when the counts match, as in MiniLM, and otherwise their greatest common divisor. The relations
are T × T for both networks, so the widths may differ; the token counts may not.

Sequence transformers (padded batches) use the encoder's last self-attention layer and the
batch's padding mask: padded keys get zero probability in both relations, padded queries are
left out, and each sample's term is normalised by its own valid length, 1/(A_h·|x_n|), so a
padded batch gives the mean of what each sample gives alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlab.distill.base import Distiller, PairInfo, register
from kdlab.distill.specs.minilm import MiniLMParams, relation_heads


def log_relation(a: torch.Tensor, b: torch.Tensor, heads: int,
                 mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """(B, T, D), (B, T, D) -> (B, heads, T, T) log softmax(a_h b_hᵀ / √(D / heads)); with a
    padding mask (B, T), True at padded frames, padded keys get log 0 = -inf."""
    batch, tokens, width = a.shape
    d = width // heads
    a_h = a.float().view(batch, tokens, heads, d).transpose(1, 2)
    b_h = b.float().view(batch, tokens, heads, d).transpose(1, 2)
    scores = a_h @ b_h.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    return F.log_softmax(scores, dim=-1)


def relation_kl(log_t: torch.Tensor, log_s: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """KL(teacher ‖ student) per (sample, head, query), averaged over all of them; with a
    padding mask, over each sample's valid keys and queries, then over the samples."""
    if mask is None:
        return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    gap = (log_t - log_s).masked_fill(mask[:, None, None, :], 0.0)  # -inf - -inf at padding
    kl = (log_t.exp() * gap).sum(-1)  # (B, heads, T)
    kl = kl.masked_fill(mask[:, None, :], 0.0)
    valid = (~mask).sum(1).clamp(min=1) * kl.shape[1]  # A_h·|x_n|
    return (kl.sum((1, 2)) / valid).mean()


def minilm_loss(
    teacher: dict[str, torch.Tensor],
    student: dict[str, torch.Tensor],
    heads_t: int,
    heads_s: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The two KL terms from each network's last_q, last_k, last_v (B, T, D); `mask` (B, T)
    True at padded frames (sequences), None for images."""
    t, s = {k: v.detach() for k, v in teacher.items()}, student
    attention = relation_kl(
        log_relation(t["last_q"], t["last_k"], heads_t, mask),
        log_relation(s["last_q"], s["last_k"], heads_s, mask),
        mask,
    )
    values = relation_kl(
        log_relation(t["last_v"], t["last_v"], heads_t, mask),
        log_relation(s["last_v"], s["last_v"], heads_s, mask),
        mask,
    )
    return attention + values


@register("minilm", MiniLMParams)
class MiniLM(Distiller):
    extras = frozenset({"last_qkv"})

    def __init__(self, params: MiniLMParams, pair: PairInfo | None = None) -> None:
        super().__init__(params, pair)
        self.heads = relation_heads(params, pair) if pair is not None else params.relation_heads

    def loss(self, student, teacher, batch):
        return minilm_loss(teacher.extras, student.extras, self.heads, self.heads, batch.mask)
