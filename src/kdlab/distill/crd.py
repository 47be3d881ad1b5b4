"""`crd`: Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR 2020).

Both pooled embeddings are projected to a shared space and L2-normalised: u = g_s(e_s),
v = g_t(e_t). Every training sample i has a memory entry for each side (M_s[i], M_t[i]), updated
as a momentum average of its embeddings. For a sample i with K negatives j₁..j_K drawn uniformly
from the N training samples, the critic h(x, m) = exp(⟨x, m⟩ / τ) / Z (Z fixed from the first
batch as N times its mean) scores the pair against the memory, and NCE with noise P_n = 1/N:

    L_s = −[ log h(u, M_t[i]) / (h(u, M_t[i]) + K/N) + Σ_k log (K/N) / (h(u, M_t[j_k]) + K/N) ],
    L   = mean_batch (L_s + L_t),   L_t the same with v scored against M_s,

as the authors' RepDistiller (`CRDLoss`, `ContrastMemory`, `ContrastLoss`), which this equals on
identical draws (tests/distill/test_crd.py). RepDistiller's CIFAR script draws each sample's
negatives from the other classes; here they are drawn from all samples (its memory's own
sampler), with the method's own random stream (`begin_epoch`), so runs resume exactly.
The memories are training state: resume checkpoints keep them, model files do not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.distill.base import Distiller, PairInfo, register
from kdlab.distill.specs.crd import CRDParams
from kdlab.errors import ConfigError

EPS = 1e-7
"""RepDistiller's ContrastLoss epsilon."""


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """scores (B, K + 1), column 0 the positive: NCE against uniform noise P_n = 1/N."""
    k = scores.shape[1] - 1
    noise = k / n_data
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class Embed(nn.Module):
    """Linear projection, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


@register("crd", CRDParams)
class CRD(Distiller):
    training_state = ("memory_s", "memory_t", "normalizer")

    def __init__(self, params: CRDParams, pair: PairInfo | None = None) -> None:
        super().__init__(params, pair)
        if pair is None or pair.train_size < 2:
            raise ConfigError("kd.method crd needs the training split's size (a memory entry per "
                              "sample); build it with PairInfo.train_size")  # fmt: skip
        self.n_data = pair.train_size
        self.embed_s = Embed(pair.student.embedding_dim, params.feat_dim)
        self.embed_t = Embed(pair.teacher.embedding_dim, params.feat_dim)
        stdv = 1.0 / math.sqrt(params.feat_dim / 3)
        init = torch.Generator().manual_seed(0)  # the model's seed already drew the rest
        for name in ("memory_s", "memory_t"):
            memory = torch.rand(self.n_data, params.feat_dim, generator=init) * 2 * stdv - stdv
            self.register_buffer(name, memory)
        self.register_buffer("normalizer", torch.full((2,), -1.0))  # Z_s, Z_t; < 0 = not yet set
        self.generator: torch.Generator | None = None

    def begin_epoch(self, epoch: int, generator: torch.Generator) -> None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.generator = torch.Generator(self.memory_s.device).manual_seed(seed)

    def draw(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, K + 1) sample indices: each row's own index, then K uniform negatives."""
        device = self.memory_s.device
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device).manual_seed(0)
        negatives = torch.randint(0, self.n_data, (len(indices), self.params.negatives),
                                  generator=self.generator, device=device)  # fmt: skip
        return torch.cat([indices.view(-1, 1), negatives], dim=1)

    def loss(self, student, teacher, batch):
        with torch.autocast(student.embedding.device.type, enabled=False):
            u = self.embed_s(student.embedding.float())
            v = self.embed_t(teacher.embedding.detach().float())
            contrast = self.draw(batch.indices)
            scores_s = self.scores(u, self.memory_t, contrast, 0)
            scores_t = self.scores(v, self.memory_s, contrast, 1)
            self.update_memory(batch.indices, u, v)
            return nce_loss(scores_s, self.n_data) + nce_loss(scores_t, self.n_data)

    def scores(self, x: torch.Tensor, memory: torch.Tensor, contrast: torch.Tensor, side: int):
        """h(x, memory[contrast]) (B, K + 1); Z of this side fixed at its first batch.

        The products with every memory entry (B, N) and then a gather, rather than gathering
        (B, K + 1, D) entries: for K = 16384 that gather is 0.5 GB per side and batch of 64.
        A copy of the memory goes into the graph: the update after this batch is in place."""
        dots = (x @ memory.clone().T).gather(1, contrast)
        out = torch.exp(dots / self.params.temperature)
        z = self.normalizer[side]
        z = torch.where(z < 0, out.detach().mean() * self.n_data, z)  # no host sync per step
        self.normalizer[side] = z
        return out / z

    @torch.no_grad()
    def update_memory(self, indices: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
        m = self.params.momentum
        for memory, x in ((self.memory_s, u), (self.memory_t, v)):
            mixed = memory[indices] * m + x.detach() * (1 - m)
            memory.index_copy_(0, indices, F.normalize(mixed, dim=1, eps=0.0))
