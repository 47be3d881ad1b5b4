"""`kdlab slurm submit` against a real single-node SLURM cluster (munged, slurmctld, slurmd).

A grid of four digits experiments (teacher, baseline, two KD students) runs to the end and shows
up in `dvc exp show`; the teacher's job ends before any student's starts; submitting again adds
nothing; a cancelled job is seen as dead and resubmitted; a stop signal mid-training requeues
the job, which resumes from its checkpoint and ends with an uninterrupted run's metrics; with
`slurm.experiments_per_gpu: 3` the three students run concurrently in one job.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest

from ..conftest import run, tiny_params, write_params
from ..repos import TINY, dvc, git, make_clone
from ..services import SLURM_BINARIES, require, start_slurm

pytestmark = pytest.mark.integration

GRID = {"datasets": ["digits"], "methods": ["logit", "at"], "alphas": [0.5], "seeds": [0]}
SLURM = {"gpus": 0, "cpus": 1, "mem": "", "time": "20:00"}
NAMES = ["digits-teacher-s0", "digits-none-s0", "digits-logit-a0.5-s0", "digits-at-a0.5-s0"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(SLURM_BINARIES, "SLURM")
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, cluster) -> Path:
    params = tiny_params(**TINY, grid=GRID, slurm=SLURM)
    return make_clone(tmp_path_factory.mktemp("slurm-grid"), params)


def kdlab(repo: Path, cluster, *args: str, check: bool = True) -> str:
    proc = run(["kdlab", *args], cwd=repo, check=check, env_extra=cluster.env)
    return proc.stdout + proc.stderr


def wait_finished(repo: Path, cluster, names: list[str], timeout: float = 400) -> str:
    """Until every experiment is finished (pushed) and its job has ended: a job still writes
    DVC's exp-show cache entry and its last log line after the push."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = kdlab(repo, cluster, "slurm", "status")
        states = dict(re.findall(r"^(\S+)\s+(\S+)", table, flags=re.M))
        if all(states.get(n) == "finished" for n in names):
            jobs = {str(ledger_entry(repo, n)["job_id"]) for n in names}
            if not jobs & set(job_ids(cluster)):
                return table
        if any(states.get(n, "").startswith("dead") for n in names):
            break
        time.sleep(2)
    logs = "\n".join(p.read_text()[-2500:] for p in (repo / ".kdlab/slurm/logs").glob("*.out"))
    raise AssertionError(f"not all of {names} finished:\n{table}\n{logs}")


def ledger_entry(repo: Path, name: str) -> dict:
    return json.loads((repo / ".kdlab/slurm/ledger.json").read_text())["experiments"][name]


def log_of(repo: Path, name: str) -> str:
    """The log of the experiment's latest job."""
    return Path(ledger_entry(repo, name)["log"]).read_text()


def times(log: str, what: str) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(t) for t in re.findall(rf"kdlab: .*{what}.*, (\S+)$", log,
                                                             flags=re.M)]  # fmt: skip


def job_ids(cluster) -> list[str]:
    return sorted(cluster.command("squeue", "-h", "-o", "%i").stdout.split(), key=int)


def assert_exp_show_cache_warmed(repo: Path, names: list[str]) -> None:
    """Each job left DVC's `dvc exp show` cache entry of its experiment commit in the repo."""
    from dvc.repo import Repo

    commit = git(repo, "rev-parse", "HEAD").strip()
    dvc_repo = Repo(str(repo))
    try:
        for name in names:
            rev = git(repo, "rev-parse", f"refs/exps/{commit[:2]}/{commit[2:]}/{name}").strip()
            entry = dvc_repo.experiments.cache.get(rev)
            assert entry is not None and entry.rev == rev, name
            assert entry.params["params.yaml"]["data"]["data"]["name"] == "digits"
    finally:
        dvc_repo.close()


def test_grid_runs_on_slurm_and_shows_in_exp_show(repo, cluster):
    out = kdlab(repo, cluster, "slurm", "submit")
    assert out.count("submitted  job") == 4, out
    assert re.search(r"digits-at-a0.5-s0\s+submitted\s+job \d+\s+after \d+", out), out
    live = job_ids(cluster)
    again = kdlab(repo, cluster, "slurm", "submit")
    assert "submitted 0" in again and set(job_ids(cluster)) <= set(live), again
    # kdlab show: the jobs' SLURM states (with the epoch from the job log once it runs)
    early = {r["name"]: r["state"] for r in json.loads(kdlab(repo, cluster, "show", "--json"))}
    assert all(
        early[n] == "done"
        or early[n].startswith(("pending", "running", "configuring", "completing"))
        for n in NAMES
    ), early

    wait_finished(repo, cluster, NAMES)
    finished = json.loads(kdlab(repo, cluster, "show", "--json", "--only", "digits-*"))
    assert {r["name"]: r["state"] for r in finished if r["name"] in NAMES} == dict.fromkeys(
        NAMES, "done"
    )
    assert_exp_show_cache_warmed(repo, NAMES)
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    names = {e["name"] for c in shown for e in (c.get("experiments") or [])}
    assert set(NAMES) <= names

    # The teacher's job ended before any student's job started, and students never trained it.
    teacher_end = times(log_of(repo, NAMES[0]), "finished and pushed")[-1]
    for name in NAMES[1:]:
        log = log_of(repo, name)
        assert times(log, "experiment")[0] >= teacher_end
        assert "Stage 'train_teacher' is cached" in log and "training teacher" not in log
    ledger = json.loads((repo / ".kdlab/slurm/ledger.json").read_text())["experiments"]
    assert all(ledger[n]["attempts"] == 1 for n in NAMES)
    assert "submitted 0" in kdlab(repo, cluster, "slurm", "submit")


def longer_teacher(repo: Path, **changes) -> None:
    """A new commit whose teacher trains long enough to be interrupted."""
    params = tiny_params(**{**TINY, "teacher.epochs": 14, **changes}, grid=GRID, slurm=SLURM)
    write_params(repo / "params.yaml", params)
    git(repo, "commit", "-qam", f"longer teacher {changes}")


def wait_for_log(repo: Path, name: str, pattern: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    path = Path(ledger_entry(repo, name)["log"])
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared in {path}")


def test_cancelled_job_is_seen_dead_and_resubmitted(repo, cluster):
    longer_teacher(repo, **{"teacher.lr": 0.08})
    out = kdlab(repo, cluster, "slurm", "submit", "--only", "digits-teacher-s0")
    job = re.search(r"submitted\s+job (\d+)", out).group(1)
    wait_for_log(repo, "digits-teacher-s0", r"teacher epoch 2/14")
    cluster.command("scancel", job)
    deadline = time.monotonic() + 60
    while cluster.job_state(job) not in ("CANCELLED", "UNKNOWN") and time.monotonic() < deadline:
        time.sleep(0.5)
    status = kdlab(repo, cluster, "slurm", "status", "--only", "digits-teacher-s0")
    assert re.search(r"digits-teacher-s0\s+dead \(CANCELLED\)\s+" + job, status), status

    out = kdlab(repo, cluster, "slurm", "submit", "--only", "digits-teacher-s0")
    assert re.search(r"digits-teacher-s0\s+resubmitted\s+job \d+", out), out
    assert "submitted 0" in kdlab(repo, cluster, "slurm", "submit", "--only", "digits-teacher-s0")
    wait_finished(repo, cluster, ["digits-teacher-s0"])
    entry = ledger_entry(repo, "digits-teacher-s0")
    assert entry["attempts"] == 2 and len(entry["job_ids"]) == 2
    # Same workspace: the resubmitted job continued from the cancelled one's checkpoint.
    assert re.search(r"resuming from .* at epoch [1-9]", log_of(repo, "digits-teacher-s0"))


def test_stop_signal_requeues_and_resumes_to_the_uninterrupted_result(repo, cluster, tmp_path):
    longer_teacher(repo, **{"teacher.lr": 0.06})
    out = kdlab(repo, cluster, "slurm", "submit", "--only", "digits-teacher-s0")
    job = re.search(r"submitted\s+job (\d+)", out).group(1)
    wait_for_log(repo, "digits-teacher-s0", r"teacher epoch 3/14")
    # What SLURM sends the batch shell `signal_seconds` before the time limit.
    cluster.command("scancel", "--batch", "--signal=USR1", job)
    wait_finished(repo, cluster, ["digits-teacher-s0"])
    log = log_of(repo, "digits-teacher-s0")
    assert "received SIGUSR1" in log and f"requeueing job {job}" in log
    resumed = re.search(r"resuming from \S+ at epoch (\d+)", log)
    assert resumed and 3 <= int(resumed.group(1)) < 14, log
    assert f"job {job} on" in log.split("restart 1")[0][-200:]  # same job id, requeued

    commit = git(repo, "rev-parse", "HEAD").strip()
    ref = f"refs/exps/{commit[:2]}/{commit[2:]}/digits-teacher-s0"
    resumed_metrics = json.loads(git(repo, "show", f"{ref}:metrics/teacher/metrics.json"))
    # The same teacher, trained without interruption (no DVC, no shared store).
    workspace = ledger_entry(repo, "digits-teacher-s0")["workspace"]
    run(["python", "-m", "kdlab.stages.train_teacher", "--data", "data/digits",
         "--model-dir", str(tmp_path / "model"), "--metrics-dir", str(tmp_path / "metrics"),
         "--resume", str(tmp_path / "resume.pt")],
        cwd=Path(workspace), env_extra={"PYTHONPATH": "src"})  # fmt: skip
    uninterrupted = json.loads((tmp_path / "metrics/metrics.json").read_text())
    assert resumed_metrics == uninterrupted


def test_dry_run_prints_scripts_and_submits_nothing(repo, cluster):
    longer_teacher(repo, **{"teacher.lr": 0.04})
    before = job_ids(cluster)
    out = kdlab(repo, cluster, "slurm", "submit", "--dry-run", "--gpus", "2", "--time", "1:00:00")
    assert out.count("#!/bin/bash") == 4 and "#SBATCH --gpus=2" in out
    assert "#SBATCH --time=1:00:00" in out and "#SBATCH --signal=B:USR1@300" in out
    assert re.search(r"start_experiment digits-at-a0.5-s0 \S+ -n digits-at-a0.5-s0 ", out), out
    assert "would submit 4" in out
    assert set(job_ids(cluster)) <= set(before)  # nothing new (old jobs may end)


def test_queued_experiments_go_to_slurm_and_leave_the_local_queue(repo, cluster):
    git(repo, "checkout", "-q", "--", ".")
    dvc(
        repo, "exp", "run", "--queue", "-n", "mine-rkd", "-S", "kd.method=rkd", "-S", "kd.alpha=0.3"
    )
    out = kdlab(repo, cluster, "slurm", "submit", "--queued")
    assert re.search(r"mine-rkd\s+submitted\s+job \d+", out), out
    assert "mine-rkd" not in dvc(repo, "queue", "status")  # it will not also run locally
    script = (repo / ".kdlab/slurm/scripts/mine-rkd.sbatch").read_text()
    assert " -n mine-rkd -S kd.method=rkd -S kd.alpha=0.3\n" in script
    deadline = time.monotonic() + 300
    commit = git(repo, "rev-parse", "HEAD").strip()
    ref = f"refs/exps/{commit[:2]}/{commit[2:]}/mine-rkd"
    while not git(repo, "for-each-ref", ref).strip() and time.monotonic() < deadline:
        time.sleep(2)
    params = git(repo, "show", f"{ref}:params.yaml")
    assert "method: rkd" in params and "alpha: 0.3" in params
    assert json.loads(git(repo, "show", f"{ref}:metrics/student/metrics.json"))["test"]["acc"] > 0.3


def test_experiments_per_gpu_packs_students_into_one_concurrent_job(repo, cluster):
    git(repo, "checkout", "-q", "--", ".")
    params = tiny_params(**{**TINY, "teacher.lr": 0.03}, grid=GRID,
                         slurm={**SLURM, "experiments_per_gpu": 3})  # fmt: skip
    write_params(repo / "params.yaml", params)
    git(repo, "commit", "-qam", "three experiments per job")
    before = set(job_ids(cluster))  # an earlier test's job may still be completing
    out = kdlab(repo, cluster, "slurm", "submit")
    teacher_job = re.search(r"digits-teacher-s0\s+submitted\s+job (\d+)", out).group(1)
    student_jobs = {re.search(rf"{re.escape(n)}\s+submitted\s+job (\d+)\s+after (\d+)", out)
                    .groups() for n in NAMES[1:]}  # fmt: skip
    assert len(student_jobs) == 1 and next(iter(student_jobs))[1] == teacher_job, out
    student_job = next(iter(student_jobs))[0]
    assert "submitted 4" in out and set(job_ids(cluster)) - before == {teacher_job, student_job}

    wait_finished(repo, cluster, NAMES)
    entries = [ledger_entry(repo, n) for n in NAMES[1:]]
    assert len({e["job_id"] for e in entries}) == 1
    assert len({e["workspace"] for e in entries}) == 3 and len({e["log"] for e in entries}) == 3
    # Concurrent: every student started before any of them finished.
    logs = [log_of(repo, n) for n in NAMES[1:]]
    starts = [times(log, "experiment")[-1] for log in logs]
    ends = [times(log, "finished and pushed")[-1] for log in logs]
    assert max(starts) <= min(ends), (starts, ends)
    commit = git(repo, "rev-parse", "HEAD").strip()
    shown = {e["name"] for c in json.loads(dvc(repo, "exp", "show", "--json"))
             if c.get("rev") == commit for e in (c.get("experiments") or [])}  # fmt: skip
    assert set(NAMES) <= shown, shown
