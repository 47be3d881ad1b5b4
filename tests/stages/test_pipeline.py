"""End to end: the real DVC pipeline in a fresh git clone (tiny epochs), as a user runs it."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdlab.distill.spec import pair_shapes
from kdlab.distill.specs import methods_serving
from kdlab.training.checkpoint import load_checkpoint

from ..browser import probe_page, screenshot
from ..conftest import VENV_BIN, run, tiny_params, write_params
from ..repos import TINY, assert_up_to_date, dvc, git, make_clone, stale_in_status

pytestmark = pytest.mark.integration

EPOCHS = 2
ALL_STAGES = {
    "check",
    "prepare",
    "train_teacher",
    "train_paraphraser",
    "train_student",
    "extract",
    "analyze",
    "shards",
    "train_sae",
}
# a params change also reruns `check`, which validates params.yaml before anything is deleted
AFTER_STUDENT = {"check", "train_student", "extract", "analyze"}


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    clone = make_clone(tmp_path_factory.mktemp("pipeline"))
    out = dvc(clone, "repro")
    assert ran_stages(out) == ALL_STAGES, out
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "first repro")
    return clone


@pytest.fixture
def restore(repo):
    """Put the workspace back to the last commit after a test that changes params."""
    yield
    git(repo, "reset", "-q", "--hard")  # DVC may have staged dvc.lock: not `checkout -- .`
    dvc(repo, "checkout", "--force")


def test_declared_outputs_exist_and_are_sane(repo):
    for name in ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"):
        assert (repo / "data/digits" / name).is_file()
    meta = json.loads((repo / "data/digits/meta.json").read_text())
    assert meta["splits"] == {"train": 1437, "test": 360}
    for role in ("teacher", "student"):
        model = load_checkpoint(repo / f"models/{role}/model.pt", "kdlab.model/1")
        assert model["epoch"] == EPOCHS and model["arch"] == "resnet8"
        assert (repo / f"models/{role}/milestones/epoch_0001.pt").is_file()
        metrics = json.loads((repo / f"metrics/{role}/metrics.json").read_text())
        assert metrics["step"] == EPOCHS - 1
        assert 0.3 < metrics["test"]["acc"] <= 1.0  # chance is 0.1
        assert metrics["test"]["acc"] == pytest.approx(model["metrics"]["test/acc"])
        assert all(
            torch.isfinite(t).all() for t in model["state_dict"].values() if t.is_floating_point()
        )
        tsv = (repo / f"metrics/{role}/plots/metrics/test/acc.tsv").read_text().splitlines()
        assert tsv[0].split("\t")[-2:] == ["step", "acc"] and len(tsv) == EPOCHS + 1
    analysis = json.loads((repo / "metrics/analysis.json").read_text())
    for layer in ("stage1", "stage2", "stage3", "embedding"):
        assert 0.0 < analysis[f"cka/{layer}"] <= 1.0 + 1e-9
        assert analysis[f"effdim/student/{layer}"] >= 1.0
        assert analysis[f"fisher/teacher/{layer}"] > 0.0
        assert 0.0 <= analysis[f"ica/{layer}"] <= 1.0
    assert -1.0 < analysis["sae/student/embedding/r2"] <= 1.0
    assert 0.0 <= analysis["sae/embedding/dict_match"] <= 1.0 + 1e-9
    for figure in ("cka_heatmap", "pca_spectra", "layers", "cka_over_training"):
        png = (repo / "plots/figures" / f"{figure}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
    by_epoch = json.loads((repo / "plots/data/cka_by_epoch.json").read_text())
    assert [row["epoch"] for row in by_epoch] == [1, EPOCHS]  # milestone 1, then final
    meta = json.loads((repo / "data/activations/metadata.json").read_text())
    assert set(meta["models"]) == {"teacher", "student", "teacher@epoch_0001", "student@epoch_0001"}
    assert meta["n"] == 128
    lock = (repo / "dvc.lock").read_text()
    assert "alpha: 0.5" in lock and "md5:" in lock


def test_second_repro_runs_nothing(repo):
    out = dvc(repo, "repro")
    assert ran_stages(out) == {"check"}, out  # the preflight, always; it reruns nothing else
    assert_up_to_date(dvc(repo, "status"))


def test_alpha_change_reruns_only_the_student(repo, restore):
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    assert ran_stages(dvc(repo, "repro")) == AFTER_STUDENT


def test_teacher_change_reruns_teacher_and_student(repo, restore):
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"teacher.lr": 0.05}))
    # shards reads the teacher (a placeholder here: the same bytes, so train_sae does not rerun)
    expected = {"train_teacher", "train_paraphraser", "shards"} | AFTER_STUDENT
    assert ran_stages(dvc(repo, "repro")) == expected


def stale_stages(repo: Path) -> set[str]:
    return stale_in_status(dvc(repo, "status"))


def test_code_edits_invalidate_exactly_the_stages_that_import_them(repo, restore):
    """Declared = read: an edit to any file a stage imports makes it stale, and only those."""
    edits = {
        # a method's loss: not the check stage, which validates with the method's spec
        "src/kdlab/distill/at.py": {"train_paraphraser", "train_student"},
        "src/kdlab/distill/specs/at.py": {"check", "train_paraphraser", "train_student"},
        "src/kdlab/training/seeding.py": {
            "check",
            "train_teacher",
            "train_paraphraser",
            "train_student",
            "extract",
            "analyze",
            "shards",
            "train_sae",
        },
        "src/kdlab/extract/activations.py": {"extract", "analyze"},
        "src/kdlab/extract/shards.py": {"shards", "train_sae"},
    }
    assert stale_stages(repo) == set(), dvc(repo, "status")
    for rel, expected in edits.items():
        path = repo / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        assert stale_stages(repo) == expected, (rel, dvc(repo, "status"))
        path.write_text(original)
    assert_up_to_date(dvc(repo, "status"))


def exp_rows(repo: Path) -> list[dict]:
    """`dvc exp show --json` flattened to one dict per experiment: name, params, student acc."""
    rows = []

    def visit(entry):
        data = entry.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("metrics/student/metrics.json", {}).get("data", {})
        rows.append({"name": entry.get("name") or data.get("name"), "params": params,
                     "acc": metrics.get("test", {}).get("acc")})  # fmt: skip
        for exp in entry.get("experiments") or []:
            for revision in exp.get("revs", []):
                visit(revision)

    for entry in json.loads(dvc(repo, "exp", "show", "--json")):
        visit(entry)
    return rows


def test_exp_run_with_set_param(repo, restore):
    out = dvc(repo, "exp", "run", "-n", "alpha-quarter", "-S", "kd.alpha=0.25")
    assert ran_stages(out) == AFTER_STUDENT, out
    row = next(r for r in exp_rows(repo) if r["name"] == "alpha-quarter")
    assert row["params"]["kd"]["alpha"] == 0.25
    assert 0.0 < row["acc"] <= 1.0


def queue_states(repo: Path) -> dict[str, str]:
    """Experiment name -> status, from the table `dvc queue status` prints (status is last)."""
    states = {}
    for line in dvc(repo, "queue", "status").splitlines()[1:]:
        words = line.split()
        if len(words) >= 4 and not line.startswith("Worker"):
            states[words[1]] = words[-1]
    return states


def test_queued_experiments_share_teacher_and_paraphraser_via_the_run_cache(repo):
    """Two queued ft experiments with a new seed: one trains the teacher and the paraphraser,
    the other restores both from DVC's run-cache."""
    names = ["seed1-ft-a0.3", "seed1-ft-a0.7"]
    for name, alpha in zip(names, ("0.3", "0.7"), strict=True):
        dvc(repo, "exp", "run", "--queue", "train_student", "-n", name, "-S", "seed=1",
            "-S", f"kd.alpha={alpha}", "-S", "kd.method=ft",
            "-S", "kd.ft.paraphraser_epochs=1")  # fmt: skip
    # kdlab show lists each queued experiment with its own params (DVC's stash commits)
    shown = json.loads(run([str(VENV_BIN / "kdlab"), "show", "--json", "--only", "seed1-*"],
                           cwd=repo).stdout)  # fmt: skip
    assert {(r["name"], r["state"], r["method"], r["alpha"], r["seed"]) for r in shown} == {
        ("seed1-ft-a0.3", "queued", "ft", 0.3, 1),
        ("seed1-ft-a0.7", "queued", "ft", 0.7, 1),
    }
    try:
        dvc(repo, "queue", "start", "-j", "1")
        # kdlab show and kdlab report while the queue runs: they work (or say in one line why
        # not), and they change nothing the run needs (it must still succeed, below)
        for args in (["show", "--json"], ["report", "--out", str(repo.parent / "rep")]):
            proc = run([str(VENV_BIN / "kdlab"), *args], cwd=repo, check=False)
            out = proc.stdout + proc.stderr
            assert "Traceback" not in out, out
            assert proc.returncode == 0 or len(proc.stderr.strip().splitlines()) == 1, out
        deadline = time.monotonic() + 600
        while True:
            states = queue_states(repo)
            if all(states.get(n) in ("Success", "Failed") for n in names):
                break
            assert time.monotonic() < deadline, states
            time.sleep(2)
    finally:
        run(["dvc", "queue", "stop"], cwd=repo, check=False)
    assert [states[n] for n in names] == ["Success", "Success"], dvc(repo, "queue", "status")
    logs = [dvc(repo, "queue", "logs", n) for n in names]
    for stage in ("train_teacher", "train_paraphraser"):
        trained = [f"Running stage '{stage}'" in log for log in logs]
        restored = [f"'{stage}' is cached - skipping run" in log for log in logs]
        assert sorted(trained) == [False, True], (stage, logs)
        assert restored == [not t for t in trained], (stage, logs)
    assert all("Running stage 'train_student'" in log for log in logs)
    rows = {r["name"]: r for r in exp_rows(repo)}
    assert {rows[n]["params"]["kd"]["alpha"] for n in names} == {0.3, 0.7}
    assert all(rows[n]["params"]["seed"] == 1 for n in names)


@pytest.mark.parametrize("method", methods_serving(pair_shapes("digits", "resnet8", "resnet8")[0]))
def test_every_method_runs_as_a_dvc_experiment(repo, restore, method):
    name = f"method-{method}"
    # Up to the student: extract/analyze are exercised by the other pipeline tests.
    out = dvc(repo, "exp", "run", "train_student", "-n", name, "-S", f"kd.method={method}",
              "-S", "kd.ft.paraphraser_epochs=2", "-S", "kd.crd.negatives=512")  # fmt: skip
    assert "train_student" in ran_stages(out), out
    assert "train_teacher" not in ran_stages(out)  # the teacher is shared, never retrained
    row = next(r for r in exp_rows(repo) if r["name"] == name)
    assert row["params"]["kd"]["method"] == method
    assert row["acc"] > 0.3, row  # 10 classes: chance is 0.1
    student = load_checkpoint(repo / "models/student/model.pt", "kdlab.model/1")
    assert student["params"]["kd"]["method"] == method
    if method == "ft":
        paraphraser = load_checkpoint(repo / "models/paraphraser/model.pt")
        assert paraphraser["trained"] and paraphraser["epochs"] == 2


def test_dvc_plots_diff_renders_figures_and_data(repo, restore):
    dvc(repo, "exp", "run", "-n", "plots-alpha", "-S", "kd.alpha=0.8")
    out_dir = repo.parent / "plots-diff"
    dvc(repo, "plots", "diff", "HEAD", "plots-alpha", "-o", str(out_dir))
    html = (out_dir / "index.html").read_text()
    assert "CKA teacher vs student per layer" in html
    images = sorted(p.name for p in (out_dir / "static").iterdir())
    assert any("plots-alpha" in name and "cka_heatmap" in name for name in images), images
    assert any("HEAD" in name or "main" in name for name in images), images


def test_dvc_plots_diff_draws_offline_in_a_browser(repo, restore):
    """Every Vega plot draws in headless Chromium with no network, and every figure fits a
    laptop-width window; the screenshot is kept for a person to look at."""
    dvc(repo, "exp", "run", "-n", "plots-offline", "-S", "kd.alpha=0.8")
    out_dir = repo.parent / "plots-offline"
    dvc(repo, "plots", "diff", "HEAD", "plots-offline", "-o", str(out_dir))
    html = (out_dir / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "<script src=" not in html
    page = probe_page(out_dir / "index.html", width=1366)
    vega = [p for p in page["plots"] if not p["images"]]
    images = [p for p in page["plots"] if p["images"]]
    assert len(vega) >= 16 and len(images) >= 4, page
    for plot in vega:
        assert plot["svg"] and plot["width"] > 200 and plot["marks"] >= 20, plot
        assert len(plot["axes"]) == 2 and not {"x", "y"} & set(plot["axes"]), plot  # named axes
        assert plot["right"] <= page["window"], plot
    for plot in images:
        assert plot["loaded"] == plot["images"] == 2, plot  # HEAD and the experiment
        assert plot["image_right"] <= page["window"], plot
    screenshot(out_dir / "index.html", repo.parent / "plots-diff.png")


def test_vit_student_with_attention_in_the_pipeline(repo, restore):
    out = dvc(repo, "exp", "run", "-n", "vit-rkd", "-S", "student.arch=vit_tiny", "-S",
              "kd.method=rkd")  # fmt: skip
    assert ran_stages(out) >= AFTER_STUDENT, out
    meta = json.loads((repo / "data/activations/metadata.json").read_text())
    assert meta["models"]["student"]["attention"] is True
    assert meta["models"]["teacher"]["attention"] is False
    attn = [k for k in meta["arrays"] if k.startswith("student/attn/")]
    assert len(attn) == 4
    import numpy as np

    weights = np.load(repo / "data/activations" / meta["arrays"][attn[0]]["file"])
    assert weights.shape == (128, 4, 17, 17)  # (N, heads, T, T): 16 patches + class token
    assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-4)
    analysis = json.loads((repo / "metrics/analysis.json").read_text())
    assert "cka/embedding" in analysis and "effdim/student/block4" in analysis


def test_vit_to_vit_with_minilm_attention_in_exp_show_plots_diff_and_report(repo, restore):
    """Issue 16's loop: a ViT→ViT KD experiment ends with attention scalars in `dvc exp show`,
    attention figures in `dvc plots diff` and attention rows in `kdlab report`."""
    vit = ["-S", "teacher.arch=vit_small", "-S", "student.arch=vit_tiny", "-S", "kd.method=minilm"]
    for name, alpha in (("vit-minilm-a0.5", 0.5), ("vit-minilm-a0.9", 0.9)):
        out = dvc(repo, "exp", "run", "-n", name, *vit, "-S", f"kd.alpha={alpha}")
        assert ran_stages(out) >= AFTER_STUDENT, out
    analysis = json.loads((repo / "metrics/analysis.json").read_text())
    tokens = 17  # 16 patches and the class token on 8×8 digits
    for i in range(1, 5):
        assert 0 <= analysis[f"attn_match/block{i}"] <= 1
        assert 0 <= analysis[f"attn_entropy/student/block{i}"] <= math.log(tokens) + 1e-9
        assert 0 < analysis[f"attn_distance/student/block{i}"] < 3 * math.sqrt(2)
        assert 0 <= analysis[f"attn_cls/student/block{i}"] <= 1
    assert {f"attn_entropy/teacher/block{i}" for i in range(1, 7)} <= set(analysis)
    figures = repo / "plots/figures"
    over_training = [
        f"attention_{m}_over_training" for m in ("entropy", "distance", "cls", "match")
    ]
    for name in ("attention_heads", "attention_rollout", *over_training):
        assert (figures / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    rows = {e["name"]: e for c in json.loads(dvc_json(repo)) for e in c.get("experiments") or []}
    shown = rows["vit-minilm-a0.9"]["revs"][0]["data"]["metrics"]["metrics/analysis.json"]["data"]
    assert shown["attn_match/block4"] == analysis["attn_match/block4"]

    out_dir = repo.parent / "plots-diff-vit"
    dvc(repo, "plots", "diff", "vit-minilm-a0.5", "vit-minilm-a0.9", "-o", str(out_dir))
    html = (out_dir / "index.html").read_text()
    assert "attention_rollout.png" in html and "attention_heads.png" in html

    report = run([str(VENV_BIN / "kdlab"), "report", "--only", "vit-minilm-*", "--alignment",
                  "attn_match/block4"], cwd=repo)  # fmt: skip
    assert report.returncode == 0
    table = pd.read_csv(repo / "plots/report/summary.csv")
    assert {f"attn_match/block{i} mean" for i in range(1, 5)} <= set(table.columns)
    pair = "vit_small-to-vit_tiny"
    for figure in (f"attn_heatmap_digits_{pair}.png", f"alpha_sweep_digits_{pair}.png"):
        assert (repo / "plots/report" / figure).read_bytes().startswith(b"\x89PNG"), figure


def dvc_json(repo: Path) -> str:
    return run(["dvc", "exp", "show", "--json"], cwd=repo).stdout


def student_acc(exp_show: list, name: str) -> float:
    """test.acc of the student's metrics file of experiment `name` in `dvc exp show --json`."""
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") == name:
                    metrics = rev["data"]["metrics"]["metrics/student/metrics.json"]["data"]
                    return metrics["test"]["acc"]
    raise AssertionError(f"{name} not in dvc exp show")


def test_kdlab_report_on_a_real_grid(repo, restore):
    """2 methods × 2 seeds finished, a baseline with one of two seeds, and one failed run."""
    grid = [("report-logit-s0", "logit", 0), ("report-logit-s1", "logit", 1),
            ("report-at-s0", "at", 0), ("report-at-s1", "at", 1),
            ("report-none-s0", "none", 0)]  # fmt: skip
    params = tiny_params(**TINY, **{"grid": {"seeds": [0, 1, 2]}})  # seed 2 never ran
    write_params(repo / "params.yaml", params)
    for name, method, seed in grid:
        dvc(repo, "exp", "run", "-n", name, "-S", f"kd.method={method}", "-S", f"seed={seed}")
    # A failed run leaves a record only through the queue: refused at once (unknown layer) by
    # its check stage. Queued with DVC's own CLI entry (kdlab's DVC guard, which would refuse
    # it before it is queued, runs for the `dvc` command only): as a run that fails in the queue.
    run([sys.executable, "-c", "import sys; from dvc.cli import main; sys.exit(main(sys.argv[1:]))",
         "exp", "run", "--queue", "-n", "report-broken", "-S", "kd.method=fitnets",
         "-S", "kd.fitnets.hint_layer=stage9"], cwd=repo)  # fmt: skip
    try:
        dvc(repo, "queue", "start", "-j", "1")
        deadline = time.monotonic() + 300
        while queue_states(repo).get("report-broken") not in ("Success", "Failed"):
            assert time.monotonic() < deadline, queue_states(repo)
            time.sleep(1)
    finally:
        run(["dvc", "queue", "stop"], cwd=repo, check=False)
    assert queue_states(repo)["report-broken"] == "Failed"

    proc = run([str(VENV_BIN / "kdlab"), "report", "--only", "report-*", "--since", "2000-01-01"],
               cwd=repo)  # fmt: skip
    out_dir = repo / "plots/report"
    summary = (out_dir / "summary.md").read_text()
    assert "| digits | resnet8→resnet8 | logit | 0.5 | 2 |" in summary
    assert "| digits | resnet8→resnet8 | at | 0.5 | 2 |" in summary
    assert "digits/resnet8→resnet8/logit/alpha=0.5: seed 2 missing" in summary
    assert "digits/resnet8→resnet8/at/alpha=0.5: seed 2 missing" in summary
    assert "digits/resnet8→resnet8/none: seed 1 missing" in summary
    assert "Test accuracy at the final epoch" in summary
    assert summary.count(" (n=1) |") == 2  # paired with the one baseline seed, no interval
    assert "report-broken: failed" in summary
    table = pd.read_csv(out_dir / "summary.csv")
    logit = table[table["method"] == "logit"].iloc[0]
    assert logit["n"] == 2 and logit["acc std"] >= 0 and 0.3 < logit["acc mean"] <= 1
    assert {
        "cka/stage3 mean",
        "cka/embedding std",
        "teacher_acc mean",
        "delta mean",
        "fidelity/top1_agreement mean",
        "calibration/ece/student mean",
    } <= set(table.columns)
    assert 0 < logit["fidelity/top1_agreement mean"] <= 1
    pair = "resnet8-to-resnet8"
    for figure in (f"paired_delta_digits_{pair}.png", f"heatmap_digits_{pair}.png",
                   "acc_vs_alignment.png"):  # fmt: skip
        assert (out_dir / figure).read_bytes().startswith(b"\x89PNG"), figure
    since = (out_dir / "since.md").read_text()
    assert "5 experiment(s)" in since and "Best per method" in since
    assert "report-broken" in proc.stdout  # listed, not dropped
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["commit"] == run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    assert provenance["command"] == "kdlab report --only 'report-*' --since 2000-01-01"
    assert (provenance["finished"], provenance["experiments"]) == (5, 6)
    assert provenance["first_finished"] <= provenance["last_finished"]
    assert (out_dir / "params.yaml").read_text() == run(
        ["git", "show", "HEAD:params.yaml"], cwd=repo).stdout  # fmt: skip

    # kdlab show reads the same experiments from refs/exps and the queue, not through DVC
    shown = {
        r["name"]: r
        for r in json.loads(
            run([str(VENV_BIN / "kdlab"), "show", "--only", "report-*", "--json"], cwd=repo).stdout
        )
    }
    exp_show = json.loads(dvc_json(repo))
    for name, _, seed in grid:
        assert shown[name]["state"] == "done" and shown[name]["seed"] == seed
        assert shown[name]["student_acc"] == pytest.approx(student_acc(exp_show, name))
    assert shown["report-logit-s0"]["delta"] == pytest.approx(
        shown["report-logit-s0"]["student_acc"] - shown["report-none-s0"]["student_acc"]
    )
    assert shown["report-logit-s1"]["delta"] is None  # no baseline for seed 1
    assert shown["report-broken"]["state"] == "failed"
    assert "hint_layer" in (repo / shown["report-broken"]["log"]).read_text()
