"""`kdlab bench`: every measurement is there, the ratios and projections follow from the rates,
bad options are one line; the DVC suite's synthetic experiments are what `dvc exp show` lists."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from kdlab.bench import dvc as bench_dvc
from kdlab.bench import train as bench
from kdlab.cli import main

from ..conftest import REPO_ROOT, run, tiny_params
from ..repos import TINY, dvc, git, make_clone

TINY_BENCH = bench.BenchConfig("tiny", "resnet8", "resnet8", 10, 512, 128, 16, 64, steps=2,
                               warmup=1, image_size=16, epochs=10)  # fmt: skip


def test_every_method_gets_reference_kdlab_and_bound_rates():
    opts = bench.Options(torch.device("cpu"), reference_workers=0, bound_compile=False,
                         kdlab_compile=False)  # fmt: skip
    result = bench.run_benchmark(TINY_BENCH, ["none", "logit", "ft"], opts)
    json.dumps(result)  # JSON-ready
    assert [row["method"] for row in result["rows"]] == ["none", "logit", "ft"]
    assert result["config"] == dataclasses.asdict(TINY_BENCH)
    evals = result["eval"]
    for row in result["rows"]:
        for key in ("reference_ips", "kdlab_ips", "bound_ips"):
            assert math.isfinite(row[key]) and row[key] > 0, row
        assert row["kdlab_vs_reference"] == pytest.approx(row["kdlab_ips"] / row["reference_ips"])
        assert row["kdlab_vs_bound"] == pytest.approx(row["kdlab_ips"] / row["bound_ips"])
        expected = 10 * (512 / row["kdlab_ips"] + 128 / evals["kdlab_ips"])
        assert row["projected_kdlab_s"] == pytest.approx(expected)
    table = bench.format_table(result)
    assert "| method | reference img/s | kdlab img/s | bound img/s |" in table
    assert table.count("\n| ") == 1 + 3  # the header and one row per method
    assert "resnet8 -> resnet8" in table and "cpus" not in table


def test_cli_bench_writes_json_and_rejects_bad_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.CONFIGS, "small", dataclasses.replace(TINY_BENCH, name="small"))
    monkeypatch.chdir(REPO_ROOT)  # a git checkout: the results record its commit
    out = tmp_path / "bench.json"
    assert main(["bench", "--methods", "none", "--steps", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| none |" in printed and f"wrote {out}" in printed
    saved = json.loads(out.read_text())
    assert saved["date"] and len(saved["commit"]) == 40
    result = saved["train"]
    assert result["config"]["steps"] == 1 and result["machine"]["device"] == "cpu"
    for argv, message in (
        (["--config", "huge"], "--config must be one of auto, cifar, small, got 'huge'"),
        (["--methods", "kd"], "--methods must be among"),
        (["--kdlab-compile", "yes"], "--kdlab-compile must be one of auto, on, off"),
    ):
        assert main(["bench", "--json", str(tmp_path / "x.json"), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
        assert not (tmp_path / "x.json").exists()


def test_vary_params_changes_only_method_alpha_and_seed():
    text = "seed: 0\nkd:\n  method: logit\n  alpha: 0.5\n  logit:\n    alpha: 7\n"
    assert bench_dvc.vary_params(text, "at", 0.9, 3) == (
        "seed: 3\nkd:\n  method: at\n  alpha: 0.9\n  logit:\n    alpha: 7\n"
    )


@pytest.mark.integration
def test_synthetic_experiments_are_listed_by_exp_show(tmp_path):
    repo = make_clone(tmp_path, tiny_params(**TINY))
    baseline = git(repo, "rev-parse", "HEAD").strip()
    dvc(repo, "exp", "run", "-n", "template", "-S", "kd.alpha=0.9")
    template = git(repo, "rev-parse", f"refs/exps/{baseline[:2]}/{baseline[2:]}/template").strip()
    bench_dvc.fast_import_experiments(repo, template, baseline, 7)
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    assert bench_dvc.count_experiments(json.dumps(shown)) == 8
    (entry,) = [c for c in shown if c["rev"] == baseline]
    seen = set()
    for exp in entry["experiments"]:
        (rev,) = exp["revs"]
        data = rev["data"]
        params = data["params"]["params.yaml"]["data"]
        metrics = data["metrics"]["metrics/student/metrics.json"]["data"]
        assert 0 < metrics["test"]["acc"] <= 1.0
        seen.add((params["kd"]["method"], params["kd"]["alpha"], params["seed"]))
    assert len(seen) == 8  # each synthetic experiment has its own params
    # Children of the baseline, like those `dvc exp run` makes.
    for i in range(7):
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/bench-{i:04d}"
        assert git(repo, "rev-parse", f"{ref}^").strip() == baseline
    run(["git", "fsck", "--no-dangling"], cwd=repo)
