"""Ctrl-C, a full disk, a read-only directory: one line, non-zero exit, nothing that looks
complete left behind; and files kdlab writes respect the umask (a lab group shares the cache)."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from kdlab import fsutil
from kdlab.stages import train_teacher
from kdlab.training.checkpoint import load_checkpoint, save_checkpoint
from kdlab.training.shared_teacher import run_once

from ..conftest import tool_env
from .test_resume import make_workdir, stage_args


def one_line_error(stderr: str, stage: str = "train_teacher") -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"kdlab {stage}: "), stderr
    return last


@pytest.mark.integration
def test_ctrl_c_during_training_is_one_line_and_writes_no_output(tmp_path, digits_dir):
    work = make_workdir(tmp_path / "w", **{"teacher.epochs": 200})
    cmd = [sys.executable, "-m", "kdlab.stages.train_teacher", *stage_args(work, digits_dir)]
    proc = subprocess.Popen(cmd, env=tool_env(), stderr=subprocess.PIPE, text=True)
    resume = work / "checkpoints/teacher/resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    line = one_line_error(stderr)
    assert "stopped by SIGINT; no output was written" in line
    assert not (work / "models/teacher").exists() and not (work / "metrics/teacher").exists()
    assert load_checkpoint(resume)["epoch"] >= 1  # the next run resumes from here


def test_disk_full_at_the_final_write_leaves_neither_model_nor_metrics(
    tmp_path, digits_dir, capsys, monkeypatch
):
    """Writing model.pt fails as on a full disk: the metrics must not appear either."""
    work = make_workdir(tmp_path / "w")
    real_fdopen = os.fdopen

    def full_at_model(fd, *args, **kwargs):
        if ".model.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            return FullFile()
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "fdopen", full_at_model)
    assert train_teacher.main(stage_args(work, digits_dir)) == 2
    line = one_line_error(capsys.readouterr().err)
    # run outside DVC, nothing was removed before it: no restore advice (tests/test_kills.py)
    assert "no space left on the device" in line and "nothing incomplete was kept" in line
    assert not (work / "models/teacher").exists() and not (work / "metrics/teacher").exists()


class FullFile:
    """A file object whose writes fail as on a full disk."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs where the machine allows mounting one (root), else None."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    yield mount if done.returncode == 0 else None
    if done.returncode == 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_too_little_space_is_refused_before_training(tmp_path, digits_dir, capsys, monkeypatch,
                                                     small_fs):  # fmt: skip
    work = make_workdir(tmp_path / "w")
    args = stage_args(work, digits_dir)
    if small_fs is not None:  # the real thing: a 1 MiB file system
        args[args.index("--resume") + 1] = str(small_fs / "checkpoints/resume.pt")
    else:
        monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda _p: SimpleNamespace(free=0))
    assert train_teacher.main(args) == 2
    err = capsys.readouterr().err
    assert "MiB free, this run needs about" in one_line_error(err)
    assert "epoch 1" not in err  # refused before training
    assert not (work / "models/teacher").exists()


def test_read_only_directory_is_one_line(tmp_path, digits_dir, capsys, monkeypatch, small_fs):
    work = make_workdir(tmp_path / "w")
    args = stage_args(work, digits_dir)
    if small_fs is not None:  # a real read-only file system
        (small_fs / "models").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        args[args.index("--model-dir") + 1] = str(small_fs / "models/teacher")
    else:

        def read_only(*_a, **_k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(fsutil.tempfile, "TemporaryFile", read_only)
    assert train_teacher.main(args) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "the file system is read-only" in line
    assert not (work / "metrics/teacher").exists()


def test_written_files_and_directories_respect_the_umask(tmp_path):
    old = os.umask(0o002)  # a lab group sharing the DVC cache
    try:
        save_checkpoint({"format": "test/1"}, tmp_path / "a.pt")
        with fsutil.atomic_directory(tmp_path / "dir") as tmp:
            (tmp / "f").write_text("x")

        def train():
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "model.pt").write_text("weights")

        run_once(tmp_path / "store", "c" * 64, {"model": tmp_path / "out"}, train)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "dir").stat().st_mode) == 0o775
    assert stat.S_IMODE((tmp_path / "store" / ("c" * 64)).stat().st_mode) == 0o775
