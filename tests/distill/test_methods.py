"""The feature-based KD methods against hand-written references of their papers' formulas."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.loader import Batch
from kdlab.distill.at import ATParams
from kdlab.distill.base import PairInfo, student_loss
from kdlab.distill.fitnets import FitNetsParams
from kdlab.distill.ft import PARAPHRASER_FORMAT, FTParams, Paraphraser
from kdlab.distill.nst import NSTParams
from kdlab.distill.registry import METHODS, make_distiller
from kdlab.distill.rkd import RKDParams
from kdlab.distill.specs import load_specs
from kdlab.errors import CheckpointError, ConfigError
from kdlab.models import Features, make_model, probe_shapes
from kdlab.training.checkpoint import save_checkpoint

FEATURE_METHODS = ["fitnets", "at", "nst", "rkd", "ft"]


def pair_of(student, teacher, size=16, artifacts=None) -> PairInfo:
    return PairInfo(probe_shapes(student, 3, size, size), probe_shapes(teacher, 3, size, size),
                    artifacts or {})  # fmt: skip


@pytest.fixture
def nets():
    torch.manual_seed(0)
    student, teacher = make_model("resnet8", 3, 10), make_model("resnet14", 3, 10)
    teacher.eval().requires_grad_(False)
    return student, teacher


def build(method: str, student, teacher, tmp_path, params=None):
    artifacts = {}
    if method == "ft":
        paraphraser = Paraphraser(64, 0.5)
        path = tmp_path / "paraphraser.pt"
        save_checkpoint({"format": PARAPHRASER_FORMAT, "trained": True,
                         "state_dict": paraphraser.state_dict()}, path)  # fmt: skip
        artifacts["paraphraser"] = path
    return make_distiller(method, params, pair_of(student, teacher, artifacts=artifacts))


def test_registry_lists_every_method_by_name_with_its_spec():
    assert list(METHODS) == sorted(METHODS) == list(load_specs())
    assert {"none", "logit", "fitnets", "at", "nst", "rkd", "ft"} <= set(METHODS)
    with pytest.raises(ConfigError) as excinfo:
        make_distiller("kdd")
    assert str(excinfo.value) == f"kd.method must be one of {', '.join(METHODS)}, got 'kdd'"


@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_finite_loss_and_gradients_reach_student_and_method_never_teacher(method, nets, tmp_path):
    student, teacher = nets
    distiller = build(method, student, teacher, tmp_path).train()
    x, labels = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    t_feats = teacher.forward_features(x)
    # Teacher outputs that *could* take gradient: the method must not send any into them.
    t_feats = Features({k: v.detach().requires_grad_(True) for k, v in t_feats.stages.items()},
                       t_feats.embedding.detach().requires_grad_(True),
                       t_feats.logits.detach().requires_grad_(True))  # fmt: skip
    batch = Batch(x, labels, torch.arange(6))
    terms = student_loss(distiller, 0.5, student.forward_features(x), t_feats, batch)
    assert torch.isfinite(terms.kd) and terms.kd.item() > 0
    terms.total.backward()
    assert all(t.grad is None for t in (*t_feats.stages.values(), t_feats.embedding))
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    kd_only = torch.autograd.grad(
        distiller.loss(student.forward_features(x), t_feats, batch),
        [p for p in student.parameters()], allow_unused=True,
    )  # fmt: skip
    assert any(g is not None and g.abs().sum() > 0 for g in kd_only)  # KD term moves the student
    own = [p for p in distiller.parameters() if p.requires_grad]
    if method in ("fitnets", "ft"):
        assert own and all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
    if method == "ft":
        assert all(p.grad is None for p in distiller.paraphraser.parameters())


@pytest.mark.parametrize("method", ["at", "nst", "rkd"])
def test_zero_when_student_features_equal_teacher_features(method, nets, tmp_path):
    student, _ = nets
    distiller = build(method, student, student, tmp_path)
    feats = student.forward_features(torch.randn(5, 3, 16, 16))
    same = Features({k: v.clone() for k, v in feats.stages.items()}, feats.embedding.clone(),
                    feats.logits.clone())  # fmt: skip
    assert distiller.loss(feats, same, None).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", ["fitnets", "ft"])
def test_learned_connector_fits_identical_features(method, tmp_path):
    """With learned parts, 'zero' means: fitting them drives the loss near zero."""
    torch.manual_seed(0)
    net = make_model("resnet8", 3, 10).eval()
    distiller = build(method, net, net, tmp_path).train()
    with torch.no_grad():
        feats = net.forward_features(torch.randn(8, 3, 16, 16))
    optimizer = torch.optim.Adam([p for p in distiller.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(300):
        loss = distiller.loss(feats, feats, None)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


def fixed_features(seed=0, b=3, c_s=4, c_t=6, hw=(4, 4), d=5) -> tuple[Features, Features]:
    gen = torch.Generator().manual_seed(seed)

    def feats(c, h_w, dim):
        stages = {"stage1": torch.randn(b, c, *h_w, generator=gen),
                  "stage3": torch.randn(b, c, *h_w, generator=gen)}  # fmt: skip
        return Features(stages, torch.randn(b, dim, generator=gen), torch.zeros(b, 10))

    return feats(c_s, hw, d), feats(c_t, (hw[0] * 2, hw[1] * 2), d + 2)


def test_at_matches_reference():
    s, t = fixed_features()
    distiller = make_distiller("at", ATParams(stages=("stage1", "stage3"), p=2.0))
    expected = 0.0
    for name in ("stage1", "stage3"):
        t_pooled = F.avg_pool2d(t.stages[name], 2)  # teacher map is 2× larger: pooled to match
        per_sample = []
        for i in range(len(s.embedding)):
            q_s = [sum(float(s.stages[name][i, c, y, x]) ** 2 for c in range(4)) / 4
                   for y in range(4) for x in range(4)]  # fmt: skip
            q_t = [sum(float(t_pooled[i, c, y, x]) ** 2 for c in range(6)) / 6
                   for y in range(4) for x in range(4)]  # fmt: skip
            n_s, n_t = math.sqrt(sum(v * v for v in q_s)), math.sqrt(sum(v * v for v in q_t))
            per_sample.append(sum((a / n_s - b / n_t) ** 2 for a, b in zip(q_s, q_t, strict=True)))
        expected += sum(per_sample) / len(per_sample)  # ‖·‖² summed over positions
    assert distiller.loss(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def test_nst_matches_reference():
    s, t = fixed_features(seed=1)
    distiller = make_distiller("nst", NSTParams(stages=("stage3",), degree=2, c=0.5))
    t_map = F.avg_pool2d(t.stages["stage3"], 2)
    expected = 0.0
    for i in range(3):
        f_s = [F.normalize(s.stages["stage3"][i, c].flatten(), dim=0).tolist() for c in range(4)]
        f_t = [F.normalize(t_map[i, c].flatten(), dim=0).tolist() for c in range(6)]

        def k(a, b):
            return (sum(x * y for x, y in zip(a, b, strict=True)) + 0.5) ** 2

        ss = sum(k(a, b) for a in f_s for b in f_s) / 16
        tt = sum(k(a, b) for a in f_t for b in f_t) / 36
        st = sum(k(a, b) for a in f_s for b in f_t) / 24
        expected += (ss + tt - 2 * st) / 3
    assert distiller.loss(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_matches_reference_with_true_triplet_angles():
    s, t = fixed_features(seed=2, b=4)
    distiller = make_distiller("rkd", RKDParams(distance_weight=1.0, angle_weight=2.0))
    n = 4

    def potentials(e):
        pts = e.tolist()
        dist = [[math.dist(pts[i], pts[j]) for j in range(n)] for i in range(n)]
        mu = sum(dist[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))

        def unit(v):
            norm = math.sqrt(sum(x * x for x in v))
            return [x / norm for x in v] if norm > 0 else [0.0] * len(v)

        angle = {}
        for i, j, k in itertools.product(range(n), repeat=3):  # angle at vertex j
            u = unit([a - b for a, b in zip(pts[i], pts[j], strict=True)])
            v = unit([a - b for a, b in zip(pts[k], pts[j], strict=True)])
            angle[i, j, k] = sum(a * b for a, b in zip(u, v, strict=True))
        return [[d / mu for d in row] for row in dist], angle

    d_s, a_s = potentials(s.embedding)
    d_t, a_t = potentials(t.embedding)
    loss_d = sum(huber(d_s[i][j] - d_t[i][j]) for i in range(n) for j in range(n)) / n**2
    loss_a = sum(huber(a_s[key] - a_t[key]) for key in a_s) / n**3
    expected = loss_d + 2.0 * loss_a
    assert distiller.loss(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def test_fitnets_matches_reference_and_pairs_the_chosen_layers():
    torch.manual_seed(3)
    student, teacher = make_model("resnet8", 3, 10).eval(), make_model("resnet14", 3, 10).eval()
    params = FitNetsParams(guided_layer="stage2", hint_layer="stage3")
    distiller = make_distiller("fitnets", params, pair_of(student, teacher)).eval()
    x = torch.randn(2, 3, 16, 16)
    s, t = student.forward_features(x), teacher.forward_features(x)
    conv, bn = distiller.connector[0], distiller.connector[1]
    assert conv.stride == (2, 2) and conv.in_channels == 32 and conv.out_channels == 64
    # r(S) = ReLU(BN_eval(conv3×3/2(S))) with the fresh BN's running stats (mean 0, var 1).
    guided = F.conv2d(s.stages["stage2"], conv.weight, stride=2, padding=1)
    guided = torch.relu(
        guided / math.sqrt(1 + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
    )
    expected = ((guided - t.stages["stage3"]) ** 2).mean()
    assert distiller.loss(s, t, None).item() == pytest.approx(expected.item(), rel=1e-5)


def test_ft_matches_reference(tmp_path):
    torch.manual_seed(4)
    student, teacher = make_model("resnet8", 3, 10).eval(), make_model("resnet14", 3, 10).eval()
    distiller = build("ft", student, teacher, tmp_path, FTParams(rate=0.5, p=1)).eval()
    x = torch.randn(3, 3, 16, 16)
    s, t = student.forward_features(x), teacher.forward_features(x)
    f_t = distiller.paraphraser.encoder(t.stages["stage3"])
    f_s = distiller.translator(s.stages["stage3"])
    assert f_t.shape == f_s.shape == (3, 32, 4, 4)
    expected = 0.0
    for i in range(3):
        a, b = f_t[i].flatten().tolist(), f_s[i].flatten().tolist()
        n_a, n_b = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        expected += sum(abs(u / n_a - v / n_b) for u, v in zip(a, b, strict=True)) / 3
    assert distiller.loss(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def test_incompatible_pairs_are_refused_with_a_reason(nets):
    pair = pair_of(*nets)
    with pytest.raises(
        ConfigError, match=re.escape("kd.at.stages names 'stage4', which the student")
    ):
        make_distiller("at", ATParams(stages=("stage4",)), pair)
    with pytest.raises(
        ConfigError, match=re.escape("kd.fitnets.guided_layer must be a student stage")
    ):
        make_distiller("fitnets", FitNetsParams(guided_layer="embedding"), pair)


def test_ft_refuses_a_placeholder_paraphraser(nets, tmp_path):
    path = tmp_path / "placeholder.pt"
    save_checkpoint({"format": PARAPHRASER_FORMAT, "trained": False}, path)
    pair = pair_of(*nets, artifacts={"paraphraser": path})
    with pytest.raises(CheckpointError, match="holds no paraphraser"):
        make_distiller("ft", FTParams(), pair)
