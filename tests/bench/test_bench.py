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
    assert "| none |" in printed and f"wrote {out} and {out.with_suffix('.md')}" in printed
    assert "| none |" in out.with_suffix(".md").read_text()
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
    bench_dvc.synthetic_experiments(repo, 8)
    assert_synthetic_experiments_listed(repo, baseline, 8)
    # kdlab show reads the same experiments, with the same numbers, without DVC
    rows = json.loads(run(["kdlab", "show", "--json", "--only", "bench-*"], cwd=repo).stdout)
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    accs = {
        rev["name"]: rev["data"]["metrics"]["metrics/student/metrics.json"]["data"]["test"]["acc"]
        for entry in shown
        for exp in entry.get("experiments") or []  # the workspace entry has none
        for rev in exp["revs"]
    }
    assert {r["name"]: r["student_acc"] for r in rows} == accs
    assert {r["state"] for r in rows} == {"done"}


@pytest.mark.integration
def test_the_floor_repository_lists_its_synthetic_experiments(tmp_path):
    """The one-stage baseline of the exp-show timing is a working DVC repository whose
    experiments are listed with their own params and metrics, like the pipeline's."""
    floor = bench_dvc.make_floor_repo(tmp_path / "floor")
    assert "Data and pipelines are up to date" in dvc(floor, "status")
    baseline = git(floor, "rev-parse", "HEAD").strip()
    bench_dvc.synthetic_experiments(floor, 5)
    assert_synthetic_experiments_listed(floor, baseline, 5)


def test_dvc_table_has_every_operation_and_the_per_experiment_cost():
    results = {"repro_s": 30.0, "repro_noop_s": 0.5, "grid_queue_s": 40.0, "queued": 240,
               "exp_show_cold_s": 21.0, "exp_show_warm_s": 2.0, "exp_show_json_s": 1.0,
               "listed": 300, "floor_exp_show_cold_s": 5.46, "check_s": 1.84,
               "show_s": 0.61, "show_listed": 300}  # fmt: skip
    table = bench_dvc.format_table(results)
    assert "| `kdlab grid queue`, 240 experiments | 40.00 |" in table
    assert "| `dvc exp show`, 300 experiments, cold | 21.00 |" in table
    assert "| `dvc exp show`, 300 one-stage experiments (floor), cold | 5.46 |" in table
    assert "| `kdlab check` (validates params.yaml and every grid point) | 1.84 |" in table
    assert "| `kdlab show`, 300 experiments, first run | 0.61 |" in table
    assert "63 ms per new experiment" in table  # (21 - 2) / 300
    assert "floor takes 0.26 of the pipeline's time" in table


def assert_synthetic_experiments_listed(repo, baseline: str, count: int) -> None:
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    assert bench_dvc.count_experiments(json.dumps(shown)) == count
    (entry,) = [c for c in shown if c["rev"] == baseline]
    seen = set()
    for exp in entry["experiments"]:
        (rev,) = exp["revs"]
        data = rev["data"]
        params = data["params"]["params.yaml"]["data"]
        metrics = data["metrics"]["metrics/student/metrics.json"]["data"]
        assert 0 < metrics["test"]["acc"] <= 1.0
        seen.add((params["kd"]["method"], params["kd"]["alpha"], params["seed"]))
    assert len(seen) == count  # each synthetic experiment has its own params
    # Children of the baseline, like those `dvc exp run` makes.
    for i in range(count - 1):
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/bench-{i:04d}"
        assert git(repo, "rev-parse", f"{ref}^").strip() == baseline
    run(["git", "fsck", "--no-dangling"], cwd=repo)


def test_default_methods_are_those_that_serve_the_benchmarked_pair():
    cfg = bench.resolve_config("cifar", torch.device("cpu"), 1, 1)
    methods = bench.default_methods(cfg)
    assert methods[0] == "none" and {"crd", "dkd", "fitnets", "ft"} <= set(methods)
    assert "minilm" not in methods  # the benchmark's ResNets have no attention
    vit = dataclasses.replace(cfg, teacher="vit_small", student="vit_tiny")
    assert {"minilm", "logit"} <= set(bench.default_methods(vit))
    assert "fitnets" not in bench.default_methods(vit)
