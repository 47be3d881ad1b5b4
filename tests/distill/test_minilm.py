"""MiniLM against a hand-computed reference, its relations against the attention the network
really computes, and the pairs it refuses in one line."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.data.loader import Batch
from kdlab.distill.minilm import minilm_loss
from kdlab.distill.registry import make_distiller
from kdlab.distill.spec import pair_shapes
from kdlab.distill.specs.minilm import MiniLMParams
from kdlab.errors import ConfigError
from kdlab.extract.attention import capture_attention
from kdlab.models import make_model, probe_shapes


def reference_kl(q_t, k_t, q_s, k_s, heads):
    """Σ over samples, heads, queries of KL(softmax(q_t k_tᵀ/√d) ‖ softmax(q_s k_sᵀ/√d)), written
    out element by element, divided by their count: the MiniLM term of the paper."""
    batch, tokens, _ = q_t.shape
    total, count = 0.0, 0
    for n in range(batch):
        for h in range(heads):
            for i in range(tokens):
                dists = []
                for q, k in ((q_t, k_t), (q_s, k_s)):
                    d = q.shape[2] // heads
                    qi = q[n, i, h * d : (h + 1) * d]
                    scores = [float(qi @ k[n, j, h * d : (h + 1) * d]) / math.sqrt(d)
                              for j in range(tokens)]  # fmt: skip
                    z = sum(math.exp(x) for x in scores)
                    dists.append([math.exp(x) / z for x in scores])
                p, r = dists
                total += sum(pj * math.log(pj / rj) for pj, rj in zip(p, r, strict=True))
                count += 1
    return total / count


def qkv(gen, batch=2, tokens=5, width=8):
    return {k: torch.randn(batch, tokens, width, generator=gen, dtype=torch.float64)
            for k in ("last_q", "last_k", "last_v")}  # fmt: skip


def test_loss_is_attention_kl_plus_value_relation_kl_by_hand():
    gen = torch.Generator().manual_seed(0)
    teacher, student = qkv(gen, width=8), qkv(gen, width=4)  # widths differ, tokens do not
    for heads in (1, 2):
        expected = reference_kl(teacher["last_q"], teacher["last_k"], student["last_q"],
                                student["last_k"], heads)  # fmt: skip
        expected += reference_kl(teacher["last_v"], teacher["last_v"], student["last_v"],
                                 student["last_v"], heads)  # fmt: skip
        got = minilm_loss(teacher, student, heads, heads).item()
        assert got == pytest.approx(expected, rel=1e-5)
    assert minilm_loss(teacher, teacher, 2, 2).item() == pytest.approx(0.0, abs=1e-6)


def test_relations_are_the_attention_the_network_computes():
    torch.manual_seed(0)
    vit = make_model("vit_small", 1, 10, 8).eval()
    vit.extras = frozenset({"last_qkv"})
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad(), capture_attention(vit) as weights:
        feats = vit.forward_features(x)
    last = list(weights.values())[-1]  # (B, heads, T, T) from nn.MultiheadAttention itself
    from kdlab.distill.minilm import log_relation

    ours = log_relation(feats.extras["last_q"], feats.extras["last_k"], heads=8).exp()
    assert torch.allclose(ours, last, atol=1e-5)


def test_vit_pairs_are_served_and_others_refused_in_one_line():
    pair, _, _ = pair_shapes("digits", "vit_small", "vit_tiny")
    make_distiller("minilm", MiniLMParams(), pair)  # 8 and 4 heads: relations over gcd = 4
    make_distiller("minilm", MiniLMParams(relation_heads=2), pair)
    refusals = {
        ("resnet20", "vit_tiny", 0): "the teacher has no nn.MultiheadAttention; use two ViTs",
        ("vit_small", "resnet8", 0): "the student has no nn.MultiheadAttention; use two ViTs",
        ("vit_small", "vit_tiny", 3): "kd.minilm.relation_heads 3 does not divide the "
                                      "teacher's width 128",
    }  # fmt: skip
    for (teacher, student, heads), message in refusals.items():
        pair, _, _ = pair_shapes("digits", teacher, student)
        with pytest.raises(ConfigError, match=message):
            make_distiller("minilm", MiniLMParams(relation_heads=heads), pair)


def test_student_learns_the_teachers_last_layer_and_the_teacher_gets_no_gradient():
    torch.manual_seed(0)
    teacher, student = make_model("vit_small", 1, 10, 8), make_model("vit_tiny", 1, 10, 8)
    teacher.requires_grad_(False)
    for net in (teacher, student):
        net.extras = frozenset({"last_qkv"})
    from kdlab.distill.base import PairInfo

    pair = PairInfo(probe_shapes(student, 1, 8, 8), probe_shapes(teacher, 1, 8, 8))
    distiller = make_distiller("minilm", None, pair)
    x = torch.randn(4, 1, 8, 8)
    batch = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4))
    loss = distiller.loss(student.forward_features(x), teacher.forward_features(x), batch)
    loss.backward()
    last = student.vit.encoder.layers[-1].self_attention.in_proj_weight
    assert loss.item() > 0 and last.grad is not None and last.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
