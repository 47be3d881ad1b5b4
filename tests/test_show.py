"""`kdlab show` on a repository laid out the way DVC leaves it: experiment refs, the queue's
stash reflogs, executor info files and their logs (the real-DVC check is in test_pipeline)."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdlab import show

from .conftest import REPO_ROOT, run, tool_env
from .repos import git, set_identity

BASE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
LONG = "fashion_mnist-logit-a0.5-temperature8-kd.logit.weight2.5-s0"


def _params(**flat) -> str:
    params = copy.deepcopy(BASE)
    for path, value in flat.items():
        *parents, leaf = path.split("__")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    return yaml.safe_dump(params, sort_keys=False)


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def _metrics(acc: float) -> str:
    return json.dumps({"test": {"acc": acc, "loss": 1.0}, "step": 1})


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    set_identity(repo)
    head = _commit(repo, {"params.yaml": _params(), ".dvc/.gitignore": "/tmp\n"}, "baseline")
    finished = {  # name -> (params, student acc, teacher acc, cka, agreement)
        "digits-teacher-s0": (_params(), None, 0.95, None, None),
        "digits-none-s0": (_params(kd__method="none"), 0.90, 0.95, 0.70, 0.91),
        "digits-logit-a0.5-s0": (_params(), 0.93, 0.95, 0.80, 0.94),
        "digits-at-a0.5-s0": (_params(kd__method="at"), 0.88, 0.95, 0.60, 0.90),
        "digits-logit-a0.5-s1": (_params(seed=1), 0.91, 0.94, 0.81, 0.93),  # no baseline s1
        LONG: (_params(seed=0, kd__logit__weight=2.5), 0.925, 0.95, 0.79, 0.93),
    }
    for name, (params, acc, t_acc, cka, agree) in finished.items():
        files = {"params.yaml": params, show.TEACHER_METRICS: _metrics(t_acc)}
        if acc is not None:
            files[show.STUDENT_METRICS] = _metrics(acc)
            files[show.ANALYSIS_METRICS] = json.dumps(
                {"cka/embedding": cka, "fidelity/top1_agreement": agree}
            )
        sha = _commit(repo, files, f"exp {name}")
        git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", sha)
        git(repo, "reset", "-q", "--hard", head)
    run_dir = repo / ".dvc/tmp/exps/run"
    queue = {"digits-logit-a0.9-s0": "queued", "digits-none-s9": "queued",
             "digits-at-a0.9-s0": "running",
             "digits-at-a0.9-s1": "waiting", "digits-logit-a0.9-s1": "failed",
             "digits-none-s1": "dead", "digits-logit-a0.9-s2": "starting",
             "digits-logit-a0.9-s3": "extracting"}  # fmt: skip
    for name, state in queue.items():
        params = _params(kd__method="none", seed=9) if name.endswith("s9") else _params(
            kd__alpha=0.9, kd__method="at" if "-at-" in name else "logit")  # fmt: skip
        rev = _commit(repo, {"params.yaml": params}, f"stash {name}")
        git(repo, "reset", "-q", "--hard", head)
        message = f"dvc-exp:{head}:{head}:{name}"  # as DVC writes it: HEAD, baseline, name
        stash = "refs/exps/celery/failed" if state == "failed" else "refs/exps/celery/stash"
        if state in ("queued", "failed"):
            git(repo, "update-ref", "--create-reflog", "-m", message, stash, rev)
        (run_dir / rev).mkdir(parents=True)
        log = run_dir / rev / f"{rev}.out"
        if state == "failed":
            log.write_text("ERROR: kdlab check: kd.fitnets.hint_layer must be ...\n")
            continue
        if state == "queued":
            continue
        info = {"name": name, "baseline_rev": head, "status": 2}
        (run_dir / rev / f"{rev}.run").write_text(json.dumps(info))
        pid = os.getpid() if state != "dead" else 2**22 + 17  # no such process
        if state != "starting":  # DVC marks a task running before its pid file is written
            (run_dir / rev / f"{rev}.pid").write_text(str(pid))
        lines = ["INFO kdlab.training.run: training teacher resnet20 on digits"]
        if state == "running":
            lines += ["INFO kdlab.training.run: student epoch 2/30: train loss 0.5",
                      "INFO kdlab.training.run: student epoch 3/30: train loss 0.4"]  # fmt: skip
        if state == "extracting":  # DVC's line for the stage after training
            lines += ["INFO kdlab.training.run: student epoch 30/30: train loss 0.1", "",
                      "Running stage 'extract':", "> python -m kdlab..."]  # fmt: skip
        if state == "waiting":
            lines += [f"INFO kdlab.training.shared_teacher: {show.WAITING_LINE} (/x/lock)"]
        log.write_text("\n".join(lines) + "\n")
    return repo


def kdlab_show(repo: Path, *args: str, check: bool = True):
    return run(["kdlab", "show", "--width", "160", *args], cwd=repo, check=check)


def by_name(repo: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(kdlab_show(repo, "--json").stdout)}


def test_every_state_and_the_paired_delta(repo):
    rows = by_name(repo)
    assert rows["digits-logit-a0.5-s0"]["delta"] == pytest.approx(0.93 - 0.90)
    assert rows["digits-at-a0.5-s0"]["delta"] == pytest.approx(0.88 - 0.90)
    assert rows["digits-logit-a0.5-s1"]["delta"] is None  # its baseline never ran
    assert rows["digits-none-s0"]["delta"] is None
    assert rows["digits-teacher-s0"] | {"log": "", "commit": ""} == {
        "name": "digits-teacher-s0", "state": "done", "dataset": "digits", "pair": "resnet20",
        "method": "teacher", "alpha": None, "seed": 0, "teacher_acc": 0.95, "student_acc": None,
        "delta": None, "cka": None, "agreement": None, "log": "", "commit": ""}  # fmt: skip
    logit = rows["digits-logit-a0.5-s0"]
    assert (logit["pair"], logit["alpha"], logit["cka"], logit["agreement"]) == (
        "resnet20→resnet8",
        0.5,
        0.80,
        0.94,
    )
    # a KD param differs (weight): still the same baseline
    assert rows[LONG]["delta"] == pytest.approx(0.925 - 0.90)
    assert rows["digits-logit-a0.9-s0"]["state"] == "queued"
    # each queued entry with its own params (the stash commit's, not the baseline's)
    assert (rows["digits-none-s9"]["state"], rows["digits-none-s9"]["method"],
            rows["digits-none-s9"]["seed"]) == ("queued", "none", 9)  # fmt: skip
    assert rows["digits-at-a0.9-s0"]["method"] == "at"
    assert rows["digits-at-a0.9-s0"]["state"] == "running (student epoch 3/30)"
    assert rows["digits-at-a0.9-s1"]["state"] == "running (waiting for teacher)"
    assert rows["digits-none-s1"]["state"] == "dead"
    assert rows["digits-logit-a0.9-s2"]["state"] == "running (starting)"
    assert rows["digits-logit-a0.9-s3"]["state"] == "running (extract)"
    failed = rows["digits-logit-a0.9-s1"]
    assert failed["state"] == "failed" and (repo / failed["log"]).is_file()
    # the params.yaml grid (digits, logit+at, alphas 0.5/0.9, seeds 0/1): what is left
    assert rows["digits-teacher-s1"]["state"] == "not queued"
    assert rows["digits-at-a0.5-s1"]["state"] == "not queued"


def test_table_fits_160_columns_and_counts_states(repo):
    out = kdlab_show(repo).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 160, max(lines, key=len)
    assert lines[0].split()[:4] == ["experiment", "state", "data", "teacher→student"]
    assert "digits-logit-a0.5-s0" in out and "+0.0300" in out and "-0.0200" in out
    short = [line.split()[0] for line in lines if line.startswith("fashion_mnist-")]
    assert len(short) == 1 and "…" in short[0] and short[0].endswith("-s0"), short
    assert "running (student epoch 3/30)" in out  # the state is never shortened first
    assert "16 experiments: 1 dead, 6 done, 1 failed, 2 not queued, 2 queued, 4 running" in lines
    assert any(line.startswith("digits-logit-a0.9-s1: failed, log ") for line in lines)
    narrow = run(["kdlab", "show", "--width", "130"], cwd=repo).stdout.splitlines()
    end = next(i for i, line in enumerate(narrow) if line.startswith("16 experiments"))
    table = narrow[:end]  # the failed and dead experiments' logs come after the table
    assert max(len(line) for line in table) <= 130, table


def test_sort_filter_and_formats(repo):
    out = kdlab_show(repo, "--only", "digits-*-a0.5-*", "--sort", "delta", "--desc", "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows][:2] == ["digits-logit-a0.5-s0", "digits-at-a0.5-s0"]
    assert all(r["name"].startswith("digits-") and "-a0.5-" in r["name"] for r in rows)
    assert rows[0]["delta"] and not rows[-1]["delta"]  # blanks last
    md = kdlab_show(repo, "--only", "digits-none-s[01]", "--md").stdout.splitlines()
    assert md[0].startswith("| experiment | state |") and len(md) == 2 + 2
    assert json.loads(kdlab_show(repo, "--only", "nothing-*", "--json", check=False).stdout
                      or "[]") == []  # fmt: skip


@pytest.mark.parametrize("args, message", [
    (["--only", "nothing-*"], "kdlab show: error: --only 'nothing-*' matches no experiment"),
    (["--sort", "bogus"], "kdlab show: error: --sort must be one of agreement, alpha, cka,"),
])  # fmt: skip
def test_bad_arguments_are_one_line(repo, args, message):
    proc = kdlab_show(repo, *args, check=False)
    assert proc.returncode != 0 and not proc.stdout
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1


def test_grid_status_is_the_same_table(repo):
    assert (run(["kdlab", "grid", "status", "--width", "160"], cwd=repo).stdout
            == kdlab_show(repo).stdout)  # fmt: skip


def test_slurm_jobs_from_the_ledger_without_a_cluster(repo, tmp_path):
    head = git(repo, "rev-parse", "HEAD").strip()
    ledger = repo / ".kdlab/slurm/ledger.json"
    ledger.parent.mkdir(parents=True)
    record = {"name": "digits-at-a0.9-s1", "job_id": "42", "commit": head, "attempts": 1,
              "workspace": "/scratch/w", "log": "/scratch/log.out", "submitted": "2026-11-22",
              "job_ids": ["42"]}  # fmt: skip
    ledger.write_text(
        json.dumps(
            {
                "experiments": {
                    "digits-at-a0.9-s1": record,
                    "digits-at-a0.5-s1": record | {"name": "digits-at-a0.5-s1"},
                }
            }
        )
    )
    from .services import path_without_slurm

    out = run(["kdlab", "show", "--json"], cwd=repo, env_extra=path_without_slurm(tmp_path)).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["digits-at-a0.5-s1"]["state"] == "submitted (job 42)"  # was "not queued"
    assert rows["digits-at-a0.9-s1"]["state"].startswith("running")  # the local queue's word


def test_all_commits_keeps_each_commits_experiments_apart(repo):
    old = git(repo, "rev-parse", "HEAD").strip()
    new = _commit(repo, {"NOTES": "new code\n"}, "a later commit")
    sha = _commit(repo, {"params.yaml": _params(kd__method="none"),
                         show.STUDENT_METRICS: _metrics(0.5),
                         show.TEACHER_METRICS: _metrics(0.9)}, "exp")  # fmt: skip
    git(repo, "update-ref", f"refs/exps/{new[:2]}/{new[2:]}/digits-none-s0", sha)
    git(repo, "reset", "-q", "--hard", new)
    head = by_name(repo)  # HEAD's experiments only
    assert head["digits-none-s0"]["student_acc"] == 0.5
    assert head["digits-logit-a0.5-s0"]["state"] == "not queued"
    rows = json.loads(run(["kdlab", "show", "-A", "--json"], cwd=repo).stdout)
    nones = {(r["commit"], r["student_acc"]) for r in rows if r["name"] == "digits-none-s0"}
    assert nones == {(old, 0.90), (new, 0.5)}
    (logit,) = [r for r in rows if r["name"] == "digits-logit-a0.5-s0"]
    assert logit["delta"] == pytest.approx(0.93 - 0.90)  # its own commit's baseline


def test_a_reader_that_stops_early_is_no_traceback(repo):
    """`kdlab show | head -3`: the pipe closes before kdlab writes; no BrokenPipeError."""
    proc = subprocess.Popen(["kdlab", "show"], cwd=repo, env=tool_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 0 and err == b"", err


def _lock(files: dict[str, str]) -> str:
    """A dvc.lock recording the md5 of each file (as `cache: false` metrics outputs)."""
    import hashlib

    outs = [{"path": p, "hash": "md5", "md5": hashlib.md5(t.encode()).hexdigest(),
             "size": len(t)} for p, t in files.items()]  # fmt: skip
    return yaml.safe_dump({"schema": "2.0", "stages": {"train_student": {"outs": outs}}})


def test_a_metrics_file_that_differs_from_dvc_lock_is_corrupt_not_a_number(repo):
    """One flipped byte in a committed metrics.json (dvc.lock holds the md5 of what the run
    wrote): `kdlab show` says corrupt and shows none of that experiment's numbers."""
    head = git(repo, "rev-parse", "HEAD").strip()
    written = {show.STUDENT_METRICS: _metrics(0.875), show.TEACHER_METRICS: _metrics(0.95)}
    for name, flip in (("digits-logit-a0.7-s0", True), ("digits-logit-a0.8-s0", False)):
        files = dict(written)
        if flip:
            files[show.STUDENT_METRICS] = files[show.STUDENT_METRICS].replace("0.875", "0.975")
        sha = _commit(repo, {"params.yaml": _params(kd__alpha=0.7), "dvc.lock": _lock(written),
                             **files}, f"exp {name}")  # fmt: skip
        git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", sha)
        git(repo, "reset", "-q", "--hard", head)
    rows = by_name(repo)
    bad, good = rows["digits-logit-a0.7-s0"], rows["digits-logit-a0.8-s0"]
    assert bad["state"] == f"corrupt ({show.STUDENT_METRICS} ≠ dvc.lock)"
    assert bad["student_acc"] is None and bad["teacher_acc"] is None
    assert good["state"] == "done" and good["student_acc"] == 0.875
    table = kdlab_show(repo).stdout
    assert "0.975" not in table and "97.5" not in table


def test_report_leaves_out_the_numbers_of_a_corrupt_run(repo):
    from kdlab.analysis import report as rep

    head = git(repo, "rev-parse", "HEAD").strip()
    written = {show.STUDENT_METRICS: _metrics(0.875)}
    flipped = {show.STUDENT_METRICS: _metrics(0.875).replace("0.875", "0.975")}
    sha = _commit(repo, {"params.yaml": _params(), "dvc.lock": _lock(written), **flipped}, "exp")
    git(repo, "reset", "-q", "--hard", head)
    data = {
        "params": {"params.yaml": {"data": yaml.safe_load(_params())}},
        "metrics": {show.STUDENT_METRICS: {"data": json.loads(flipped[show.STUDENT_METRICS])}},
    }
    payload = [{"rev": head, "experiments": [
        {"name": "x", "executor": None, "revs": [{"rev": sha, "data": data}]}]}]  # fmt: skip
    runs = rep.mark_corrupt(repo, rep.parse_exp_show(payload))
    row = runs.iloc[0]
    assert row["state"] == f"corrupt ({show.STUDENT_METRICS} ≠ dvc.lock)"
    assert pd.isna(row["acc"])
    assert any("corrupt" in p for p in rep.find_problems(runs, runs.iloc[0:0], None, []))


def test_a_task_dvc_finished_but_never_collected_is_dead_not_done(tmp_path):
    """A queue worker SIGKILLed mid-run: its `exec-run` finishes as an orphan and marks the task
    finished, but nothing collects it (no experiment ref). Never `done` with blank accuracies;
    the real queue and kill are in tests/test_kills.py."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    set_identity(repo)
    head = _commit(repo, {"params.yaml": _params(), ".dvc/.gitignore": "/tmp\n"}, "baseline")
    for name, status, collected in (("orphan", 6, False), ("kept", 6, True), ("tmp", 3, False),
                                    ("gone", 2, False)):  # fmt: skip
        rev = _commit(repo, {"params.yaml": _params(kd__alpha=0.3)}, f"stash {name}")
        ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
        if collected:
            files = {"params.yaml": _params(kd__alpha=0.3), show.STUDENT_METRICS: _metrics(0.9),
                     show.TEACHER_METRICS: _metrics(0.95)}  # fmt: skip
            git(repo, "update-ref", ref, _commit(repo, files, f"exp {name}"))
        git(repo, "reset", "-q", "--hard", head)
        info = {"name": name, "baseline_rev": head, "status": status, "result_ref": ref,
                "location": "temp" if name == "tmp" else "dvc-task"}  # fmt: skip
        run_dir = repo / ".dvc/tmp/exps/run" / rev
        run_dir.mkdir(parents=True)
        (run_dir / f"{rev}.run").write_text(json.dumps(info))
        (run_dir / f"{rev}.pid").write_text(str(2**22 + 17))  # no such process
    rows = {r["name"]: r for r in json.loads(kdlab_show(repo, "--json").stdout)}
    assert rows["orphan"]["state"] == "dead (worker vanished)"
    assert rows["gone"]["state"] == "dead (worker vanished)"
    assert rows["kept"]["state"] == "done" and rows["kept"]["student_acc"] == 0.9
    assert rows["tmp"]["state"] == "collecting"  # `--temp`: collected by its own process
    table = kdlab_show(repo).stdout
    assert "`kdlab grid requeue --dead` queues them again" in table, table


def test_an_experiment_commit_without_its_metrics_is_not_done(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    set_identity(repo)
    head = _commit(repo, {"params.yaml": _params()}, "baseline")
    sha = _commit(repo, {"params.yaml": _params(kd__alpha=0.3)}, "exp without results")
    git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/bare", sha)
    git(repo, "reset", "-q", "--hard", head)
    rows = {r["name"]: r for r in json.loads(kdlab_show(repo, "--json").stdout)}
    assert rows["bare"]["state"] == f"incomplete (no {show.STUDENT_METRICS})"
