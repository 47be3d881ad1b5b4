"""Kills and races leave nothing behind (on real DVC repos): a killed queue worker's run is shown
`dead (worker vanished)`, never `done`, and `kdlab grid requeue --dead` recovers it from the
run-cache; a stage that fails after DVC removed its outputs names the commands that bring them
back, and running them does; SIGTERM outside training removes the stage's temps; `kdlab doctor`
sweeps what kills left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kdlab import doctor, fsutil
from kdlab.show import queue_worker_pids

from .conftest import REPO_ROOT, run, tiny_params, tool_env, write_params
from .repos import TINY, dvc, git, make_clone, restore_tracked

pytestmark = pytest.mark.integration

INJECTOR = REPO_ROOT / "tests" / "faults" / "sitecustomize.py"


def show_states(repo: Path) -> dict[str, dict]:
    proc = run(["kdlab", "show", "--json"], cwd=repo)
    return {r["name"]: r for r in json.loads(proc.stdout)}


def wait_for(what, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__ or what}"
        time.sleep(step)


def start_queue(repo: Path) -> None:
    """`dvc queue start`, its output not captured: the worker it leaves running inherits the
    pipes, and reading them to the end would wait for the whole queue."""
    subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=tool_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.slow
def test_a_killed_queue_worker_is_dead_not_done_and_requeue_recovers_it(tmp_path):
    # a teacher no other test trains (the train-once store would hand it over at once), long
    # enough to kill its worker mid-run
    repo = make_clone(tmp_path, tiny_params(**{**TINY, "teacher.epochs": 40,
                                               "teacher.lr": 0.0731}))  # fmt: skip
    run(["dvc", "exp", "run", "--queue", "-n", "q1", "-S", "kd.alpha=0.3"], cwd=repo)
    start_queue(repo)
    exps = repo / ".dvc/tmp/exps"

    def teacher_started():
        """the teacher of q1 to train"""
        return any("teacher epoch 2/40" in p.read_text(errors="replace")
                   for p in exps.glob("run/*/*.out"))  # fmt: skip

    wait_for(teacher_started, 300, 0.1)
    workers = queue_worker_pids(repo)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)

    def dead():
        """q1 to be dead (worker vanished)"""
        return show_states(repo).get("q1", {}).get("state") == "dead (worker vanished)"

    wait_for(dead, 300)  # its exec-run goes on as an orphan and ends: never collected
    assert "/q1" not in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/")
    table = run(["kdlab", "show", "--width", "80"], cwd=repo).stdout
    assert "`kdlab grid requeue --dead` queues them again" in table, table

    out = run(["kdlab", "grid", "requeue", "--dead"], cwd=repo).stdout
    assert re.search(r"^q1: requeued: dvc exp run --queue -n q1 -S kd.alpha=0.3$", out, re.M), out
    assert [p for p in exps.glob("tmp*") if p.is_dir()] == [], "the dead executor was kept"
    start_queue(repo)

    def done():
        """q1 to be done"""
        state = show_states(repo).get("q1", {})
        return state if state.get("state") == "done" else None

    row = wait_for(done, 600)
    assert row["student_acc"] is not None and row["alpha"] == 0.3
    logs = "".join(p.read_text(errors="replace") for p in exps.glob("run/*/*.out"))
    for stage in ("train_teacher", "train_student", "extract"):  # analyze has cache: false outputs
        assert f"Stage '{stage}' is cached - skipping run" in logs, f"{stage} ran again"


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A repo with good results committed (what `dvc checkout` / `git checkout` restore)."""
    repo = make_clone(tmp_path_factory.mktemp("advice"))
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "good results")
    return repo


def tree(repo: Path, *dirs: str) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes()
            for d in dirs for p in sorted((repo / d).rglob("*")) if p.is_file()}  # fmt: skip


def test_a_disk_that_fills_mid_stage_names_the_restore_commands_and_they_work(committed):
    """ENOSPC at the student's resume checkpoint, after DVC removed models/student and the
    `cache: false` metrics: the line names `dvc checkout` for the one and `git checkout --` for
    the others (DVC's cache has no copy of those), and running exactly that restores them."""
    repo = committed
    before = tree(repo, "models", "metrics")
    shutil_copy(INJECTOR, repo / "src" / "sitecustomize.py")
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    try:
        full = {"KDLAB_ENOSPC_ON_FSYNC": r"checkpoints/student/.*\.tmp$@1"}
        proc = run(["dvc", "repro"], cwd=repo, check=False, env_extra=full)
    finally:
        (repo / "src" / "sitecustomize.py").unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    line = next(x for x in out.splitlines() if x.startswith("kdlab train_student: error:"))
    assert "no space left on the device" in line, line
    assert not (repo / "models/student").exists()  # DVC removed it before the stage ran
    advice = re.search(r"DVC removed this stage's last outputs before it ran: `([^`]+)` brings "
                       r"them back$", line)  # fmt: skip
    assert advice, line
    git_paths = "metrics/student/metrics.json metrics/student/plots/metrics"
    assert advice.group(1) == f"dvc checkout models/student && git checkout -- {git_paths}"
    run(["bash", "-c", advice.group(1)], cwd=repo)
    assert tree(repo, "models", "metrics") == before
    restore_tracked(repo)


def shutil_copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


STAGE_KILLED_BY_SIGTERM = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from kdlab.fsutil import atomic_directory
    from kdlab.stages._common import run_stage

    def body(run):
        with atomic_directory(Path(sys.argv[1]) / "figures") as tmp:
            (tmp / "cka.png").write_bytes(b"half a figure")
            os.kill(os.getpid(), signal.SIGTERM)  # `kill`, or SLURM at walltime
            signal.pause()

    sys.exit(run_stage(sys.argv[2], lambda parser: None, body, [], load=None))
""")


@pytest.mark.parametrize("stage", ["analyze", "train_student"])
def test_sigterm_outside_training_removes_the_stages_temps(tmp_path, stage):
    proc = subprocess.run([sys.executable, "-c", STAGE_KILLED_BY_SIGTERM, str(tmp_path), stage],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 143, proc.stderr
    assert list(tmp_path.iterdir()) == [], "the temp outlived SIGTERM"
    line = proc.stderr.strip().splitlines()[-1]
    again = ("resumes from the last complete epoch" if stage.startswith("train_")
             else "starts it over (it keeps no partial work)")  # fmt: skip
    assert line.startswith(f"kdlab {stage}: interrupted (SIGTERM); no output was written"), line
    assert again in line, line


def dead_temp(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    make = f"tempfile.mkdtemp(prefix=temp_prefix({name!r}), dir={str(parent)!r})"
    code = f"import tempfile; from kdlab.fsutil import temp_prefix; print({make})"
    return Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout.strip())  # fmt: skip


def test_doctor_sweeps_what_kills_left(tmp_path):
    repo = make_clone(tmp_path)
    stale = [dead_temp(repo / "models", "student"), dead_temp(repo / "plots", "figures"),
             dead_temp(repo / ".dvc" / "tmp", "params-guard")]  # fmt: skip
    foreign = repo / "metrics" / ".teacher.kdlab-tmp-othernode-12-34-abcd"
    foreign.mkdir(parents=True)
    executor = repo / ".dvc/tmp/exps/tmpab12cd34"
    (executor / ".dvc").mkdir(parents=True)
    remote = tmp_path / "remote"
    (remote / "files/md5/ab").mkdir(parents=True)
    (remote / "files/md5/ab/cdef0123").write_bytes(b"object")
    old, young = (remote / "files/md5/ab" / f".{c * 22}.tmp" for c in "Ay")
    for path in (old, young):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    run(["dvc", "remote", "add", "-d", "store", str(remote)], cwd=repo)
    assert git(repo, "status", "--porcelain", "-uall").strip() == "M .dvc/config"

    out = run(["kdlab", "doctor"], cwd=repo).stdout
    for path in stale:
        assert f"removed {path.relative_to(repo)} (its writer is gone)" in out, out
        assert not path.exists()
    assert f"kept {foreign.relative_to(repo)}: written on another host" in out and foreign.exists()
    assert "removed .dvc/tmp/exps/tmpab12cd34 (a DVC queue executor no live task uses)" in out
    assert not executor.exists()
    assert (
        f"remote store: {old} is a push's temp, 120 min old; `kdlab doctor --clean-remote`" in out
    )
    out = run(["kdlab", "doctor", "--clean-remote"], cwd=repo).stdout
    assert f"removed remote store: {old} (a killed push's, 2.0 h old)" in out, out
    assert not old.exists() and young.exists(), "a young temp may be a push in progress"
    assert (remote / "files/md5/ab/cdef0123").exists()


def test_a_live_writers_temp_survives_the_doctor(tmp_path):
    live = Path(tempfile_in(tmp_path))
    removed, _ = doctor.sweep_workspace(tmp_path)
    assert removed == [] and live.exists()


def tempfile_in(parent: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=fsutil.temp_prefix("teacher"), dir=parent)
