"""kdlab report's logic on a synthetic `dvc exp show --json` payload (no DVC needed)."""

from __future__ import annotations

import datetime as dt
import subprocess

import pandas as pd
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
                   # running: the student's metrics are there, extract and analyze not yet
                   exp("logit-running", "logit", 0.5, 1, 0.75, state="running"),
                   # a grid teacher experiment: stale student metrics from the commit
                   exp("cifar100-teacher-s0", "logit", 0.5, 0, 0.99)]}]  # fmt: skip
    return rep.parse_exp_show(payload)


def test_rows_and_grid_coordinates(runs):
    assert len(runs) == 8  # the grid's teacher experiment is not a student result
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
        "logit-queued: not finished (state queued)",
        "logit-running: not finished (state running)",
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
                            "acc_vs_alignment.png", f"paired_delta_{pair}.png"])  # fmt: skip
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes().startswith(b"\x89PNG")
    since = (tmp_path / "since.md").read_text()
    assert "1 experiment(s)" in since and "at-a0.9-s0" in since and "at-a0.5-s0" not in since


def test_only_selects_by_name(runs):
    assert sorted(rep.select(runs, "none-*")["name"]) == ["none-s0", "none-s1"]
    with pytest.raises(rep.ConfigError, match=r"^--only 'nomatch-\*' matches no experiment$"):
        rep.select(runs, "nomatch-*")
    with pytest.raises(rep.ConfigError, match=r"^--only 'nomatch-\*' matches no experiment$"):
        rep.select(rep.parse_exp_show([{"rev": "workspace", "experiments": None}]), "nomatch-*")


def test_unknown_alignment_is_refused_and_stale_figures_go(runs, tmp_path):
    report = rep.build_report(runs)
    with pytest.raises(rep.ConfigError, match=r"--alignment must be an analysis metric of the "
                       r"finished experiments \(cka/embedding.*\); got 'cka/bogus'"):  # fmt: skip
        rep.check_alignment(report, "cka/bogus")
    rep.check_alignment(report, "cka/embedding")
    out = tmp_path / "report"
    with rep.report_directory(out) as stage:
        rep.write_report(report, stage, "cka/embedding", dt.datetime(2026, 11, 21))
    assert (out / "acc_vs_alignment.png").is_file() and (out / "since.md").is_file()
    (out / "notes.png").write_bytes(b"x")  # not a report's file: carried over
    (out / "RUN.md").write_text("how this was made")
    only_logit = rep.build_report(rep.select(runs, "logit-*"))
    with pytest.raises(RuntimeError), rep.report_directory(out) as stage:  # a report that fails
        rep.write_report(only_logit, stage, "no-such-column")
        raise RuntimeError("killed half-way")
    assert (out / "since.md").is_file() and (out / "acc_vs_alignment.png").is_file()  # intact
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary directory left
    with rep.report_directory(out) as stage:
        written = rep.write_report(only_logit, stage, "no-such-column")
    names = {p.name for p in out.iterdir()}
    assert names == {p.name for p in written} | {"notes.png", "RUN.md"}
    assert "acc_vs_alignment.png" not in names and "since.md" not in names


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


def fm_exp(name, method, seed, acc, temperature=4.0, teacher_acc=0.90, step=14, epochs=15):
    """A Fashion-MNIST experiment with teacher metrics, fidelity and a temperature param."""
    data = {
        "timestamp": "2026-11-22T10:00:00",
        "params": {"params.yaml": {"data": {
            "seed": seed, "data": {"name": "fashion_mnist"},
            "teacher": {"arch": "resnet20"}, "student": {"arch": "resnet8", "epochs": epochs},
            "kd": {"method": method, "alpha": 0.5, "logit": {"temperature": temperature},
                   "at": {"stages": ["stage1", "stage2"]}}}}},
        "metrics": {
            "metrics/student/metrics.json": {"data": {"test": {"acc": acc}, "step": step}},
            "metrics/teacher/metrics.json": {"data": {"test": {"acc": teacher_acc}}},
            "metrics/analysis.json": {"data": {"fidelity/top1_agreement": acc,
                                               "calibration/ece/student": 0.05}}},
    }  # fmt: skip
    return {"name": name, "executor": None, "revs": [{"rev": name, "data": data}]}


@pytest.fixture
def paired_runs():
    base = {0: 0.80, 1: 0.82, 2: 0.81}
    exps = [fm_exp(f"none-s{s}", "none", s, acc) for s, acc in base.items()]
    # logit T=2: Δ = 0.01, 0.02, 0.03 (interval reaches below 0); T=8: Δ = 0.020, 0.021, 0.022
    exps += [fm_exp(f"logit-T2-s{s}", "logit", s, base[s] + d, 2.0)
             for s, d in zip(base, (0.01, 0.02, 0.03), strict=True)]  # fmt: skip
    exps += [fm_exp(f"logit-T8-s{s}", "logit", s, base[s] + d, 8.0)
             for s, d in zip(base, (0.020, 0.021, 0.022), strict=True)]  # fmt: skip
    exps += [fm_exp(f"at-s{s}", "at", s, base[s] - 0.01) for s in (0, 1)]  # seed 2 missing
    return rep.parse_exp_show([{"rev": "abc", "experiments": exps}])


def test_axes_and_paired_intervals(paired_runs):
    report = rep.build_report(paired_runs, seeds=[0, 1, 2])
    # the temperature varies among logit students only: an axis; at.stages never varies
    assert report.axes == ["params.kd.logit.temperature"]
    summary = report.summary.set_index(["method", "params.kd.logit.temperature"], drop=False)
    half = 4.302652729911275 * 0.01 / 3**0.5
    t2 = summary.loc[("logit", 2.0)]
    assert t2["delta n"] == 3 and t2["delta mean"] == pytest.approx(0.02)
    assert t2["delta ci low"] == pytest.approx(0.02 - half)
    assert t2["delta ci high"] == pytest.approx(0.02 + half)
    assert not t2["delta > 0 at 95%"] and summary.loc[("logit", 8.0)]["delta > 0 at 95%"]
    at = report.summary[report.summary["method"] == "at"].iloc[0]
    assert at["delta n"] == 2 and at["delta mean"] == pytest.approx(-0.01)
    assert pd.isna(at["params.kd.logit.temperature"])  # not a logit student: blank
    assert at["teacher_acc mean"] == pytest.approx(0.90)
    assert at["gap mean"] == pytest.approx((0.79 + 0.81) / 2 - 0.90)
    assert report.problems == ["fashion_mnist/resnet20→resnet8/at/alpha=0.5: seed 2 missing "
                               "(no finished experiment)"]  # fmt: skip
    text = rep.markdown_summary(report)
    assert "Test accuracy at the final epoch (epoch 15 of 15)" in text
    assert (
        "| fashion_mnist | resnet20→resnet8 | logit | 0.5 | 8 | 3 | 0.8310 ± 0.0105 | "
        "0.9000 ± 0.0000 | -0.0690 | +0.0210 (n=3) | [+0.0185, +0.0235] | ✓ |"
    ) in text
    assert (
        "| fashion_mnist | resnet20→resnet8 | logit | 0.5 | 2 | 3 | 0.8300 ± 0.0173 | "
        "0.9000 ± 0.0000 | -0.0700 | +0.0200 (n=3) | [-0.0048, +0.0448] |  |"
    ) in text
    assert "| none | – | – | 3 | 0.8100 ± 0.0100 |" in text
    assert ("Δ > 0 at 95 % (the whole interval above 0): logit α=0.5 temperature=8. Not shown "
            "to beat the baseline: at α=0.5, logit α=0.5 temperature=2.") in text  # fmt: skip
    assert "fidelity/top1_agreement" in text and "calibration/ece/student" in text


def test_a_run_short_of_its_epochs_is_a_problem(paired_runs):
    exps = [fm_exp("none-s0", "none", 0, 0.8), fm_exp("cut-s0", "logit", 0, 0.8, step=9)]
    runs = rep.parse_exp_show([{"rev": "abc", "experiments": exps}])
    report = rep.build_report(runs)
    assert "cut-s0: metrics are from epoch 10, not the final epoch 15" in report.problems
    assert "the last epoch each run recorded (epochs 10, 15)" in report.epochs


def test_paired_figure_is_written(paired_runs, tmp_path):
    written = rep.write_report(rep.build_report(paired_runs), tmp_path, "cka/embedding")
    names = {p.name for p in written}
    assert "paired_delta_fashion_mnist_resnet20-to-resnet8.png" in names
    assert (tmp_path / "paired_delta_fashion_mnist_resnet20-to-resnet8.png").stat().st_size > 10_000


def test_every_swept_metric_has_a_labelled_axis():
    assert rep.axis_label("acc") == "accuracy"
    assert rep.axis_label("cka/stage1") == "CKA with the teacher"
    assert rep.axis_label("attn_match/block4").startswith("matched attention similarity")


def model_exp(name, seed, acc, teacher=None, external=None):
    """A study of one model on JapaneseVowels (`student.arch: none`): one metrics step."""
    data = {
        "timestamp": "2026-12-07T10:00:00",
        "params": {"params.yaml": {"data": {
            "seed": seed, "data": {"name": "japanese_vowels"},
            "teacher": teacher or {"arch": "spoter_small", "epochs": 40},
            "student": {"arch": "none"}, "kd": {"method": "none", "alpha": 0.5},
            "external": external or {"path": "", "sha256": ""}}}},
        "metrics": {"metrics/teacher/metrics.json": {"data": {"test": {"acc": acc}, "step": 0}},
                    "metrics/student/metrics.json": {"data": {}}},
    }  # fmt: skip
    return {"name": name, "executor": None, "revs": [{"rev": name, "data": data}]}


def test_an_imported_model_is_labelled_and_has_no_epochs_to_fall_short_of():
    imported = {"path": "/abs/spoter.pt", "sha256": "a" * 64}
    exps = [model_exp(f"jv-import-s{s}", s, 0.95, external=imported) for s in (0, 1)]
    report = rep.build_report(rep.parse_exp_show([{"rev": "abc", "experiments": exps}]))
    assert report.problems == [] and set(report.finished["pair"]) == {
        "imported spoter_small (one model)"}  # fmt: skip
    assert report.epochs == "the imported models' evaluation (not trained here)"
    trained = [model_exp("jv-s0", 0, 0.9)]  # trained here for 40 epochs, stopped after 1
    report = rep.build_report(rep.parse_exp_show([{"rev": "abc", "experiments": trained}]))
    assert report.problems == ["jv-s0: metrics are from epoch 1, not the final epoch 40"]


def test_a_sized_model_is_named_with_its_sizes():
    teacher = {"arch": "spoter_small", "epochs": 1, "size": {"heads": 6, "dim": 96}}
    runs = rep.parse_exp_show([{"rev": "abc", "experiments": [model_exp("a", 0, 0.9, teacher)]}])
    assert list(runs["pair"]) == ["spoter_small{dim=96,heads=6} (one model)"]
    assert rep._slug("spoter_small{dim=96,heads=6}→spoter_tiny") == (
        "spoter_small-dim96-heads6-to-spoter_tiny"
    )


def test_dataset_selects_the_experiments_of_one_dataset(paired_runs):
    both = pd.concat([paired_runs, rep.parse_exp_show([{"rev": "abc", "experiments": [
        model_exp("jv-s0", 0, 0.98, {"arch": "spoter_small", "epochs": 1})]}])])  # fmt: skip
    assert set(rep.select_dataset(both, "japanese_vowels")["name"]) == {"jv-s0"}
    assert len(rep.select_dataset(both, None)) == len(both)
    with pytest.raises(
        rep.ConfigError,
        match="--dataset 'mnist' matches no experiment; the "
        "experiments are on fashion_mnist, japanese_vowels",
    ):
        rep.select_dataset(both, "mnist")


def test_a_report_of_only_studies_of_one_model_writes_no_alignment_figure(paired_runs, tmp_path):
    """--dataset leaves the other datasets' metric columns behind (empty): no scatter of them."""
    both = pd.concat([paired_runs, rep.parse_exp_show([{"rev": "abc", "experiments": [
        model_exp(f"jv-s{s}", s, 0.98, {"arch": "spoter_small", "epochs": 1}) for s in (0, 1)
    ]}])])  # fmt: skip
    report = rep.build_report(rep.select_dataset(both, "japanese_vowels"))
    written = rep.write_report(report, tmp_path, "fidelity/top1_agreement")
    assert "acc_vs_alignment.png" not in {p.name for p in written}
    assert "spoter_small (one model)" in (tmp_path / "summary.md").read_text()
