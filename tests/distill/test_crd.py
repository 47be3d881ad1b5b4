"""CRD against the authors' reference (RepDistiller's CRDLoss, ContrastMemory and ContrastLoss,
restated below) on identical draws, and its memory as training state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdlab.architectures import ShapeInfo
from kdlab.data.loader import Batch
from kdlab.distill.base import PairInfo
from kdlab.distill.registry import make_distiller
from kdlab.distill.specs.crd import CRDParams
from kdlab.errors import ConfigError
from kdlab.models import Features


class RefEmbed(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.linear(x.view(x.shape[0], -1))
        return x.div(x.pow(2).sum(1, keepdim=True).pow(1.0 / 2))


class RefContrastMemory(nn.Module):
    """RepDistiller crd/memory.py ContrastMemory (MIT licence), with `idx` always given."""

    def __init__(self, input_size, output_size, k, t=0.07, momentum=0.5):
        super().__init__()
        self.k = k
        self.register_buffer("params", torch.tensor([k, t, -1, -1, momentum]))
        stdv = 1.0 / math.sqrt(input_size / 3)
        self.register_buffer(
            "memory_v1", torch.rand(output_size, input_size).mul_(2 * stdv).add_(-stdv)
        )
        self.register_buffer(
            "memory_v2", torch.rand(output_size, input_size).mul_(2 * stdv).add_(-stdv)
        )

    def forward(self, v1, v2, y, idx):
        k, t = int(self.params[0].item()), self.params[1].item()
        z_v1, z_v2, momentum = self.params[2].item(), self.params[3].item(), self.params[4].item()
        batch, output_size, input_size = v1.size(0), self.memory_v1.size(0), self.memory_v1.size(1)
        weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach()
        weight_v1 = weight_v1.view(batch, k + 1, input_size)
        out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(batch, input_size, 1)), t))
        weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach()
        weight_v2 = weight_v2.view(batch, k + 1, input_size)
        out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(batch, input_size, 1)), t))
        if z_v1 < 0:
            self.params[2] = out_v1.mean() * output_size
            z_v1 = self.params[2].clone().detach().item()
        if z_v2 < 0:
            self.params[3] = out_v2.mean() * output_size
            z_v2 = self.params[3].clone().detach().item()
        out_v1 = torch.div(out_v1, z_v1).contiguous()
        out_v2 = torch.div(out_v2, z_v2).contiguous()
        with torch.no_grad():
            l_pos = torch.index_select(self.memory_v1, 0, y.view(-1))
            l_pos.mul_(momentum).add_(torch.mul(v1, 1 - momentum))
            self.memory_v1.index_copy_(0, y, l_pos.div(l_pos.pow(2).sum(1, keepdim=True).pow(0.5)))
            ab_pos = torch.index_select(self.memory_v2, 0, y.view(-1))
            ab_pos.mul_(momentum).add_(torch.mul(v2, 1 - momentum))
            self.memory_v2.index_copy_(
                0, y, ab_pos.div(ab_pos.pow(2).sum(1, keepdim=True).pow(0.5))
            )
        return out_v1, out_v2


def ref_contrast_loss(x, n_data, eps=1e-7):
    """RepDistiller crd/criterion.py ContrastLoss."""
    bsz, m = x.shape[0], x.size(1) - 1
    pn = 1 / float(n_data)
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz


def pair(n_data: int, s_dim: int = 12, t_dim: int = 20) -> PairInfo:
    return PairInfo(ShapeInfo({}, s_dim, 10), ShapeInfo({}, t_dim, 10), {}, train_size=n_data)


def features(embedding: torch.Tensor) -> Features:
    return Features({}, embedding, torch.zeros(len(embedding), 10))


def test_crd_equals_repdistiller_on_identical_draws():
    n_data, k, feat_dim = 50, 7, 16
    params = CRDParams(feat_dim=feat_dim, negatives=k, temperature=0.1, momentum=0.3)
    ours = make_distiller("crd", params, pair(n_data))
    torch.manual_seed(0)
    embed_s, embed_t = RefEmbed(12, feat_dim), RefEmbed(20, feat_dim)
    memory = RefContrastMemory(feat_dim, n_data, k, 0.1, 0.3)
    ours.embed_s.load_state_dict(embed_s.state_dict())
    ours.embed_t.load_state_dict(embed_t.state_dict())
    ours.memory_s.copy_(memory.memory_v1)
    ours.memory_t.copy_(memory.memory_v2)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):  # the first batch fixes Z; later ones use it and the updated memory
        f_s = torch.randn(8, 12, generator=gen, requires_grad=True)
        f_t = torch.randn(8, 20, generator=gen)
        indices = torch.randperm(n_data, generator=gen)[:8]
        contrast = torch.cat(
            [indices.view(-1, 1), torch.randint(0, n_data, (8, k), generator=gen)], 1
        )
        ours.draw = lambda _indices, c=contrast: c  # the same negatives for both
        loss = ours.loss(features(f_s), features(f_t), Batch(f_s, torch.zeros(8), indices))
        out_s, out_t = memory(embed_s(f_s), embed_t(f_t), indices, contrast)
        expected = ref_contrast_loss(out_s, n_data) + ref_contrast_loss(out_t, n_data)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), step
        assert torch.allclose(ours.memory_s, memory.memory_v1, atol=1e-6)
        assert torch.allclose(ours.memory_t, memory.memory_v2, atol=1e-6)
        ours_grad = torch.autograd.grad(loss, [f_s, ours.embed_t.linear.weight])
        ref_grad = torch.autograd.grad(expected, [f_s, embed_t.linear.weight])
        for a, b in zip(ours_grad, ref_grad, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert ours.normalizer.tolist() == pytest.approx(memory.params[2:4].tolist(), rel=1e-6)


def test_negatives_come_from_the_methods_own_stream_and_the_positive_first():
    distiller = make_distiller("crd", CRDParams(negatives=100), pair(1000))
    indices = torch.tensor([3, 999, 0])

    def draws(epoch):
        distiller.begin_epoch(epoch, torch.Generator().manual_seed(epoch))
        return distiller.draw(indices)

    first = draws(5)
    assert first.shape == (3, 101) and torch.equal(first[:, 0], indices)
    assert first.min() >= 0 and first.max() < 1000
    assert torch.equal(draws(5), first) and not torch.equal(draws(6), first)


def test_memory_is_training_state_kept_for_resume_not_in_the_model_file():
    distiller = make_distiller("crd", CRDParams(feat_dim=8), pair(30))
    kept = distiller.model_state_dict()
    assert "embed_s.linear.weight" in kept and "embed_t.linear.bias" in kept
    assert not {"memory_s", "memory_t", "normalizer"} & set(kept)
    assert {"memory_s", "memory_t", "normalizer"} <= set(distiller.state_dict())


def test_crd_needs_the_training_split_size():
    with pytest.raises(ConfigError, match="training split's size"):
        make_distiller("crd", None, pair(0))
