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
        ("resnet20", "vit_tiny", 0): "the teacher has no self-attention layer; use two ViTs",
        ("vit_small", "resnet8", 0): "the student has no self-attention layer; use two ViTs",
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


def sequence_pair():
    """spoter_small → spoter_tiny on a padded JapaneseVowels-shaped batch (lengths 29, 7, 1, 18)."""
    from kdlab.data.loader import padding_mask

    torch.manual_seed(3)
    teacher, student = make_model("spoter_small", 12, 9, 29), make_model("spoter_tiny", 12, 9, 29)
    for net in (teacher, student):
        net.extras = frozenset({"last_qkv"})
    lengths = torch.tensor([29, 7, 1, 18])
    mask = padding_mask(lengths, 29)
    x = torch.randn(4, 29, 12).masked_fill(mask[..., None], 0.0)
    pair, _, _ = pair_shapes("japanese_vowels", "spoter_small", "spoter_tiny")
    return teacher, student, x, mask, lengths, pair


def test_masked_minilm_on_a_padded_batch_is_the_mean_of_each_sample_alone():
    teacher, student, x, mask, lengths, pair = sequence_pair()
    distiller = make_distiller("minilm", MiniLMParams(), pair)  # 4 and 2 heads: over 2
    assert distiller.heads == 2
    teacher.eval(), student.eval()
    with torch.no_grad():
        batch = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4), mask)
        padded = distiller.loss(student.forward_features(x, mask),
                                teacher.forward_features(x, mask), batch).item()  # fmt: skip
        alone = []
        for i, n in enumerate(lengths.tolist()):
            xi = x[i : i + 1, :n]
            one = Batch(xi, torch.zeros(1, dtype=torch.long), torch.arange(1), None)
            alone.append(distiller.loss(student.forward_features(xi),
                                        teacher.forward_features(xi), one).item())  # fmt: skip
        garbage = x + 50.0 * mask[..., None]  # padded frames' values never matter
        dirty = distiller.loss(student.forward_features(garbage, mask),
                               teacher.forward_features(garbage, mask), batch).item()  # fmt: skip
    assert padded == pytest.approx(sum(alone) / len(alone), rel=1e-5)
    assert dirty == pytest.approx(padded, rel=1e-5)
    assert alone[2] == pytest.approx(0.0, abs=1e-6)  # one frame: both relations are [1]
    assert min(alone[0], alone[1], alone[3]) > 0


def test_masked_relations_are_the_encoders_attention_with_zero_on_padding():
    from kdlab.distill.minilm import log_relation

    teacher, _, x, mask, _, _ = sequence_pair()
    teacher.eval()
    with torch.no_grad(), capture_attention(teacher) as weights:
        feats = teacher.forward_features(x, mask)
    last = weights["encoder.2.self_attn"]  # (B, heads, T, T) from nn.MultiheadAttention itself
    ours = log_relation(feats.extras["last_q"], feats.extras["last_k"], 4, mask).exp()
    valid = ~mask
    for i in range(4):
        rows = valid[i]
        assert torch.allclose(ours[i][:, rows][:, :, rows], last[i][:, rows][:, :, rows],
                              atol=1e-5)  # fmt: skip
        assert (ours[i][:, :, ~rows] == 0).all()


def test_masked_minilm_trains_the_students_encoder_with_finite_gradients():
    teacher, student, x, mask, _, pair = sequence_pair()
    teacher.requires_grad_(False)
    distiller = make_distiller("minilm", MiniLMParams(relation_heads=1), pair)
    batch = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4), mask)
    loss = distiller.loss(student.forward_features(x, mask), teacher.forward_features(x, mask),
                          batch)  # fmt: skip
    loss.backward()
    last = student.encoder[-1].self_attn.in_proj_weight
    assert torch.isfinite(loss) and loss.item() > 0
    assert last.grad is not None and torch.isfinite(last.grad).all() and last.grad.abs().sum() > 0
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in teacher.parameters())


def test_minilm_refuses_mixed_kinds_and_sequence_models_without_an_encoder():
    pair, _, _ = pair_shapes("japanese_vowels", "spoter_small", "spoter_tiny")
    from dataclasses import replace

    no_encoder = replace(pair.student, stages={"decoder.0": (1, 32)})
    with pytest.raises(ConfigError, match="the student has no self-attention layer"):
        make_distiller("minilm", MiniLMParams(), replace(pair, student=no_encoder))
    image = replace(pair.student, kind="image")
    with pytest.raises(ConfigError, match="two networks of the same kind"):
        make_distiller("minilm", MiniLMParams(), replace(pair, student=image))


def test_the_student_stage_distils_a_sequence_teachers_attention_through_padded_batches(
    tmp_path,
):
    """train_teacher then train_student (kd.method minilm) on the embedded variable-length set:
    the KD term is finite and positive every epoch and the student is a spoter_tiny."""
    import json

    from kdlab.data.datasets import prepare_dataset
    from kdlab.stages import train_student, train_teacher
    from kdlab.training.checkpoint import load_checkpoint

    from ..conftest import tiny_params, write_params

    data = tmp_path / "data" / "seq_motifs"
    prepare_dataset("seq_motifs", data)
    params = tiny_params(**{"data.name": "seq_motifs", "teacher.arch": "spoter_small",
                            "student.arch": "spoter_tiny", "kd.method": "minilm",
                            "teacher.epochs": 2, "student.epochs": 2, "teacher.save_epochs": [1],
                            "student.save_epochs": [1], "teacher.batch_size": 64,
                            "student.batch_size": 64})  # fmt: skip
    write_params(tmp_path / "params.yaml", params)

    def args(role: str) -> list[str]:
        return ["--params", str(tmp_path / "params.yaml"), "--data", str(data),
                "--model-dir", str(tmp_path / "models" / role),
                "--metrics-dir", str(tmp_path / "metrics" / role),
                "--resume", str(tmp_path / "checkpoints" / role / "resume.pt")]  # fmt: skip

    assert train_teacher.main(args("teacher")) == 0
    teacher = str(tmp_path / "models/teacher/model.pt")
    assert train_student.main([*args("student"), "--teacher", teacher]) == 0
    model = load_checkpoint(tmp_path / "models/student/model.pt", "kdlab.model/1")
    assert model["arch"] == "spoter_tiny" and model["params"]["kd"]["method"] == "minilm"
    assert 0 < model["metrics"]["train/kd"] < 100
    metrics = json.loads((tmp_path / "metrics/student/metrics.json").read_text())
    assert 0 <= metrics["test"]["acc"] <= 1
