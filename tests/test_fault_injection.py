"""A real `dvc repro`, SIGKILLed (with its stage) at several points, then run again: the outputs
and dvc.lock equal an uninterrupted run's, file for file and byte for byte, and nothing is left
around them: no kdlab temp anywhere, `git status` as after an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kdlab.errors import CheckpointError
from kdlab.training.checkpoint import load_checkpoint

from .conftest import REPO_ROOT, tiny_params, tool_env
from .repos import TINY, make_clone

pytestmark = pytest.mark.integration

PARAMS = tiny_params(**{**TINY, "teacher.epochs": 4, "student.epochs": 4,
                        "teacher.save_epochs": [2], "student.save_epochs": [2]})  # fmt: skip
TARGET = "train_student"
OUTPUTS = ("models/teacher", "models/student", "metrics/teacher", "metrics/student")
INJECTOR = REPO_ROOT / "tests" / "faults" / "sitecustomize.py"


def snapshot(repo: Path) -> dict[str, bytes]:
    files = {"dvc.lock": (repo / "dvc.lock").read_bytes()}
    for out in OUTPUTS:
        for path in sorted((repo / out).rglob("*")):
            if path.is_file():
                files[path.relative_to(repo).as_posix()] = path.read_bytes()
    return files


def repro(repo: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    # its own session: the injector kills the process group, i.e. dvc and the stage
    env = {**tool_env(), **(env_extra or {})}
    return subprocess.Popen(["dvc", "repro", TARGET], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def status(repo: Path) -> list[str]:
    """`git status` with every untracked file listed (a stray temp inside a directory too), but
    the fault injector the test copied in."""
    out = subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return sorted(line for line in out.splitlines() if line != "?? src/sitecustomize.py")


def kdlab_temps(repo: Path) -> list[str]:
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*.kdlab-tmp-*")
                  if ".git" not in p.parts)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    repo = make_clone(tmp_path_factory.mktemp("reference"), PARAMS)
    proc = repro(repo)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return {**snapshot(repo), STATUS: "\n".join(status(repo)).encode()}


STATUS = "<git status>"


def kill_clone(base: Path) -> Path:
    repo = make_clone(base, PARAMS)
    shutil.copy(INJECTOR, repo / "src" / "sitecustomize.py")  # not a dep of any stage
    return repo


def rerun_equals(repo: Path, reference: dict[str, bytes]) -> str:
    proc = repro(repo)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    got = {**snapshot(repo), STATUS: "\n".join(status(repo)).encode()}
    assert kdlab_temps(repo) == [], "a killed writer's temp outlived the rerun"
    assert sorted(got) == sorted(reference), "other files than an uninterrupted run"
    differ = [name for name in reference if got[name] != reference[name]]
    assert not differ, f"differ from an uninterrupted run: {differ}"
    return out


KILL_POINTS = {
    # name: (regex of the file whose fsync kills, n-th such fsync)
    "teacher-resume-write": (r"checkpoints/teacher/\.resume\.pt\..*\.tmp$", 3),
    "teacher-milestone-write": (r"checkpoints/teacher/milestones/\.epoch_0002\.pt\..*\.tmp$", 1),
    "teacher-final-write": (r"models/\.teacher\.[^/]*/\.model\.pt\..*\.tmp$", 1),
    "student-milestone-write": (r"checkpoints/student/milestones/\.epoch_0002\.pt\..*\.tmp$", 1),
    "student-resume-write-after-milestone": (r"checkpoints/student/\.resume\.pt\..*\.tmp$", 3),
    "student-final-write": (r"models/\.student\.[^/]*/\.model\.pt\..*\.tmp$", 1),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_during_a_write_then_rerun_equals_uninterrupted(point, tmp_path, reference):
    pattern, nth = KILL_POINTS[point]
    repo = kill_clone(tmp_path)
    proc = repro(repo, {"KDLAB_KILL_ON_FSYNC": f"{pattern}@{nth}"})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}:\n{out}"
    role = point.split("-")[0]
    # nothing that looks complete was left where DVC or a later stage would take it
    assert not (repo / "models" / role).exists()
    assert not (repo / "metrics" / role / "metrics.json").exists()
    if point.endswith("final-write"):  # killed inside atomic_directory: its temp is left
        assert any(t.startswith(f"models/.{role}.kdlab-tmp-") for t in kdlab_temps(repo))
    out = rerun_equals(repo, reference)
    assert f"resuming from checkpoints/{role}/resume.pt" in out, out


def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path, reference):
    repo = kill_clone(tmp_path)
    proc = repro(repo)
    resume = repo / "checkpoints/teacher/resume.pt"
    deadline = time.monotonic() + 300
    while proc.poll() is None:
        try:
            if load_checkpoint(resume)["epoch"] >= 1:
                break
        except CheckpointError:
            pass
        assert time.monotonic() < deadline, "the teacher never finished an epoch"
        time.sleep(0.01)
    time.sleep(0.15)  # into the next epoch
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (repo / "models/teacher").exists()
    out = rerun_equals(repo, reference)
    assert "resuming from checkpoints/teacher/resume.pt" in out
