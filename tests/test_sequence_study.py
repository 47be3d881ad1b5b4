"""The sequence study on a fresh clone, as a user runs it: `dvc exp run -S data.name=
japanese_vowels ... -S student.arch=none` prepares the real UEA files from a mirror (a local
HTTP server), trains one SPOTER-shaped model, extracts its attention at the milestones and
writes the sequence measures and figures; `kdlab show`, `kdlab report` and a SLURM dry run
handle the study of one model."""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest

from kdlab.data.datasets import DATASETS

from .conftest import run, tiny_params, uea_mirror
from .repos import TINY, git, make_clone
from .services import path_without_slurm

pytestmark = pytest.mark.integration

STUDY = ["data.name=japanese_vowels", "teacher.arch=spoter_small", "student.arch=none",
         "kd.method=none", "teacher.epochs=4", "teacher.save_epochs=[2,3]", "teacher.lr=0.05",
         "teacher.batch_size=32", "extract.n_samples=64", "analyze.sae_epochs=5",
         "analyze.case_studies=['3','7']"]  # fmt: skip


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    for remote in DATASETS["japanese_vowels"].files:
        (root / remote.filename).write_bytes((uea_mirror() / remote.filename).read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=str(root), **k)
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_japanese_vowels_study_of_one_model_end_to_end(tmp_path, mirror):
    repo = make_clone(tmp_path, tiny_params(**TINY))
    sets = [arg for s in [*STUDY, f"data.mirror={mirror}"] for arg in ("-S", s)]
    proc = run(["dvc", "exp", "run", "-n", "jv-model", *sets], cwd=repo)
    log = proc.stdout + proc.stderr
    for stage in ("check", "prepare", "train_teacher", "train_paraphraser", "train_student",
                  "extract", "analyze"):  # fmt: skip
        assert f"Running stage '{stage}'" in log, stage
    assert "a study of one model; wrote the no-student markers" in log
    meta = json.loads((repo / "data/japanese_vowels/meta.json").read_text())
    assert meta["kind"] == "sequence" and meta["sequence_shape"] == [29, 12]
    assert meta["splits"] == {"train": 270, "test": 370}
    assert json.loads((repo / "metrics/student/metrics.json").read_text()) == {}
    assert (repo / "models/student/no-student.json").is_file()
    assert json.loads((repo / "metrics/teacher/metrics.json").read_text())["test"]["acc"] > 0.5

    acts = repo / "data/activations"
    cache = json.loads((acts / "metadata.json").read_text())
    assert cache["kind"] == "sequence" and sorted(cache["models"]) == [
        "teacher", "teacher@epoch_0002", "teacher@epoch_0003"]  # fmt: skip
    lengths = np.load(acts / "lengths.npy")
    cross = np.load(acts / cache["arrays"]["teacher/attn/decoder.1.cross_attn"]["file"])
    selfa = np.load(acts / cache["arrays"]["teacher/attn/encoder.0.self_attn"]["file"])
    assert cross.shape == (64, 4, 1, 29) and selfa.shape == (64, 4, 29, 29)
    for i, length in enumerate(lengths):
        assert (cross[i, :, :, length:] == 0).all() and (selfa[i, :, :length, length:] == 0).all()
        assert np.allclose(cross[i, :, 0, :length].sum(-1), 1, atol=1e-5)

    metrics = json.loads((repo / "metrics/analysis.json").read_text())
    for key in ("seq_entropy/teacher/encoder.0.self_attn",
                "seq_read/teacher/decoder.1.cross_attn",
                "seq_distance/teacher/encoder.2.self_attn",
                "seq_edges/teacher/decoder.0.cross_attn"):  # fmt: skip
        assert 0 <= metrics[key] <= 29, key
    assert not any(key.startswith(("cka/", "fidelity/")) for key in metrics)  # nothing to pair
    figures = sorted(p.name for p in (repo / "plots/figures").iterdir())
    for name in ("sequence_cross_attention.png",
                 "sequence_normalized_entropy_by_epoch_teacher.png",
                 "sequence_read_position_by_epoch_teacher.png",
                 "sequence_change_by_epoch_teacher.png"):  # fmt: skip
        assert name in figures and (repo / "plots/figures" / name).read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((repo / "plots/data/sequence_cross_attention.json").read_text())
    assert {r["class"] for r in rows} == {"3", "7"}
    heads = json.loads((repo / "plots/data/sequence_heads.json").read_text())
    assert sorted({r["epoch"] for r in heads}) == [2, 3, 4]

    shown = run(["kdlab", "show"], cwd=repo, check=False).stdout
    assert "jv-model" in shown and "one model" in shown, shown
    run(["kdlab", "report", "--dataset", "japanese_vowels", "--out", "report"], cwd=repo)
    summary = (repo / "report/summary.md").read_text()
    assert "Studies of one model" in summary and "spoter_small (one model)" in summary


def test_a_grid_of_one_model_over_seeds_renders_for_slurm(tmp_path):
    grid = {"datasets": ["japanese_vowels"], "methods": [], "alphas": [0.5], "seeds": [0, 1, 2],
            "baseline": False, "axes": {}}  # fmt: skip
    params = tiny_params(**TINY, grid=grid)
    params["data"]["name"] = "japanese_vowels"
    params["teacher"]["arch"], params["student"]["arch"] = "spoter_small", "none"
    repo = make_clone(tmp_path, params)
    dry = run(["kdlab", "slurm", "submit", "--dry-run"], cwd=repo,
              env_extra=path_without_slurm(tmp_path))  # fmt: skip
    assert dry.stdout.count("#!/bin/bash") == 3
    names = [f"japanese_vowels-model-s{seed}" for seed in (0, 1, 2)]
    assert all(name in dry.stdout for name in names), dry.stdout[-2000:]
    assert "train_teacher" not in dry.stdout.split("#!/bin/bash", 1)[1].split("\n", 1)[0]
    queued = run(["kdlab", "grid", "queue", "--dry-run"], cwd=repo).stdout
    assert "would queue 3," in queued
    params["grid"]["methods"] = ["logit"]
    (repo / "params.yaml").write_text(json.dumps(params))
    git(repo, "commit", "-qam", "a KD method in a grid without a student")
    refused = run(["kdlab", "grid", "queue", "--dry-run"], cwd=repo, check=False)
    assert refused.returncode != 0 and "set grid.methods to []" in refused.stderr
