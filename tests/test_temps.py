"""Temporary files have one owner and one sweep (kdlab.fsutil): a temp is named by the host, pid
and start time of its writer; the next writer of the same name removes a dead writer's, never a
live one's nor another host's; git ignores the pattern."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdlab import fsutil

from .conftest import REPO_ROOT


def dead_writers_temp(parent: Path, name: str, directory: bool) -> Path:
    """A temp as a writer killed mid-write leaves it (a real process that has since exited)."""
    code = textwrap.dedent(f"""
        import tempfile
        from pathlib import Path
        from kdlab.fsutil import temp_prefix
        parent, name = Path({str(parent)!r}), {name!r}
        if {directory!r}:
            path = Path(tempfile.mkdtemp(prefix=temp_prefix(name), dir=parent))
            (path / "model.pt").write_bytes(b"half")
        else:
            _, path = tempfile.mkstemp(prefix=temp_prefix(name), suffix=".tmp", dir=parent)
        print(path)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def test_a_temp_names_its_writer():
    prefix = fsutil.temp_prefix("teacher")
    match = fsutil.TEMP_NAME.match(prefix + "abc123")
    assert match and match["name"] == "teacher" and int(match["pid"]) == os.getpid()
    assert fsutil.temp_owner_alive(prefix + "abc123") is True
    assert fsutil.temp_owner_alive(".teacher.abc123") is None  # not a kdlab temp


def test_the_next_directory_write_removes_a_dead_writers_temp(tmp_path):
    stale = dead_writers_temp(tmp_path, "teacher", directory=True)
    assert fsutil.temp_owner_alive(stale) is False
    with fsutil.atomic_directory(tmp_path / "teacher") as out:
        (out / "model.pt").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]


def test_the_next_file_write_removes_a_dead_writers_temp(tmp_path):
    stale = dead_writers_temp(tmp_path, "resume.pt", directory=False)
    other = dead_writers_temp(tmp_path, "epoch_0002.pt", directory=False)
    fsutil.write_bytes_atomic(tmp_path / "resume.pt", b"x")
    assert not stale.exists()
    assert other.exists()  # another file's temp: its own next write removes it


def test_a_live_writers_temp_is_kept(tmp_path):
    live = Path(fsutil.temp_prefix("teacher").join([str(tmp_path) + "/", "live"]))
    live.mkdir()
    assert fsutil.sweep_stale_temps(tmp_path) == []
    assert live.exists()


def test_a_reused_pid_is_not_the_owner(tmp_path):
    """Same pid, another start time: a process that merely got the dead writer's pid."""
    mine = fsutil.temp_prefix("teacher")
    host, pid, start = fsutil.TEMP_NAME.match(mine).group("host", "pid", "start")
    reused = tmp_path / f".teacher.kdlab-tmp-{host}-{pid}-{int(start) + 1}-x"
    reused.mkdir()
    assert fsutil.sweep_stale_temps(tmp_path) == [reused]


def test_another_hosts_temp_is_never_removed(tmp_path):
    theirs = tmp_path / ".teacher.kdlab-tmp-othernode07-4242-123-x"
    theirs.mkdir()
    assert fsutil.temp_owner_alive(theirs) is None
    assert fsutil.sweep_stale_temps(tmp_path) == []
    assert theirs.exists()


@pytest.mark.parametrize("rel", ["models/.teacher.kdlab-tmp-h-1-2-abc/.model.pt.kdlab-tmp-h-x.tmp",
                                 "metrics/.teacher.kdlab-tmp-h-1-2-abc",
                                 "plots/.figures.kdlab-tmp-h-1-2-abc/cka.png",
                                 ".dvc/tmp/.params-guard.kdlab-tmp-h-1-2-abc"])  # fmt: skip
def test_git_ignores_every_temp(rel):
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=REPO_ROOT)
    assert proc.returncode == 0, f"{rel} would show in git status"
