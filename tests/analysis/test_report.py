"""kdlab report's logic on a synthetic `dvc exp show --json` payload (no DVC needed)."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from kdlab.analysis import report as rep

from ..conftest import VENV_BIN, tool_env


def exp(name, method, alpha, seed, acc, cka=0.8, state=None, stamp="2026-11-20T10:00:00"):
    data = {
        "timestamp": stamp,
        "params": {"params.yaml": {"data": {
            "seed": seed, "data": {"name": "cifar100"},
            "teacher": {"arch": "resnet56"}, "student": {"arch": "resnet20"},
            "kd": {"method": method, "alpha": alpha}}}},
        "metrics": {} if acc is None else {
            "metrics/student/metrics.json": {"data": {"test": {"acc": acc}}},
            "metrics/analysis.json": {"data": {"cka/stage3": cka, "cka/embedding": cka + 0.1}}},
    }  # fmt: skip
    executor = {"state": state} if state else None
    return {"name": name, "executor": executor, "revs": [{"rev": name, "data": data}]}


@pytest.fixture
def runs():
    payload = [{"rev": "workspace", "data": {}, "experiments": None},
               {"rev": "abc", "experiments": [
                   exp("at-a0.5-s0", "at", 0.5, 0, 0.70, 0.80),
                   exp("at-a0.5-s1", "at", 0.5, 1, 0.72, 0.84),
                   exp("at-a0.9-s0", "at", 0.9, 0, 0.60, 0.90, stamp="2026-11-21T09:00:00"),
                   exp("none-s0", "none", 0.5, 0, 0.68),
                   exp("none-s1", "none", 0.5, 1, 0.66),
                   exp("at-a0.9-s1", "at", 0.9, 1, None, state="failed"),
                   exp("logit-queued", "logit", 0.5, 0, None, state="queued"),
                   # a grid teacher experiment: stale student metrics from the commit
                   exp("cifar100-teacher-s0", "logit", 0.5, 0, 0.99)]}]  # fmt: skip
    return rep.parse_exp_show(payload)


def test_rows_and_grid_coordinates(runs):
    assert len(runs) == 7  # the grid's teacher experiment is not a student result
    row = runs[runs["name"] == "at-a0.5-s1"].iloc[0]
    assert (row["dataset"], row["pair"], row["method"], row["alpha"], row["seed"]) == (
        "cifar100",
        "resnet56→resnet20",
        "at",
        0.5,
        1,
    )
    assert row["acc"] == 0.72 and row["cka/stage3"] == 0.84
    assert runs[runs["name"] == "none-s0"]["alpha"].isna().all()  # the baseline has no alpha


def test_mean_std_over_seeds_and_problems_listed(runs):
    report = rep.build_report(runs)
    at = report.summary[(report.summary["method"] == "at") & (report.summary["alpha"] == 0.5)]
    assert at["n"].item() == 2
    assert at["acc mean"].item() == pytest.approx(0.71)
    assert at["acc std"].item() == pytest.approx(0.0141421356, rel=1e-6)
    assert at["cka/stage3 mean"].item() == pytest.approx(0.82)
    assert report.problems == [
        "at-a0.9-s1: failed",
        "logit-queued: no student metrics (state queued)",
        "cifar100/resnet56→resnet20/at/alpha=0.9: seed 1 missing (no finished experiment)",
    ]
    text = rep.markdown_summary(report)
    assert "| cifar100 | resnet56→resnet20 | none | – | 2 | 0.6700 ± 0.0141 |" in text
    assert "- at-a0.9-s1: failed" in text


def test_declared_grid_seeds_are_expected(runs):
    report = rep.build_report(runs, seeds=[0, 1, 2])
    missing = [p for p in report.problems if "seed 2 missing" in p]
    assert len(missing) == 3  # at/0.5, at/0.9, none


def test_files_and_since(runs, tmp_path):
    report = rep.build_report(runs)
    written = rep.write_report(report, tmp_path, "cka/embedding", dt.datetime(2026, 11, 21))
    names = sorted(p.name for p in written)
    pair = "cifar100_resnet56-to-resnet20"
    assert names == sorted(["summary.md", "summary.csv", "runs.csv", "since.md",
                            f"alpha_sweep_{pair}.png", f"heatmap_{pair}.png",
                            "acc_vs_alignment.png"])  # fmt: skip
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes().startswith(b"\x89PNG")
    since = (tmp_path / "since.md").read_text()
    assert "1 experiment(s)" in since and "at-a0.9-s0" in since and "at-a0.5-s0" not in since


def test_only_selects_by_name(runs):
    assert sorted(rep.select(runs, "none-*")["name"]) == ["none-s0", "none-s1"]


def test_no_experiments_is_a_clear_error():
    with pytest.raises(rep.KdlabError, match="no experiments found"):
        rep.build_report(rep.parse_exp_show([]))


def test_report_rejects_a_bad_since_date(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "kdlab"), "report", "--since", "last tuesday"],
                          capture_output=True, text=True, env=tool_env(), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kdlab report: error: --since must be a date like 2026-11-21 or 2026-11-21T14:00, "
        "got 'last tuesday'"
    )
