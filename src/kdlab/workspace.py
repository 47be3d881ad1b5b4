"""One run per workspace, decided before params.yaml changes.

`dvc exp run -S` writes its values into the workspace's params.yaml (and `--queue` stashes the
workspace for a moment) before DVC takes any lock of its own, so a second `dvc exp run` in a
workspace where one is running would change the params under the first. kdlab's DVC guard
(kdlab.dvcguard, run by every `dvc` of this environment before DVC starts) takes this lock
first: an exclusive POSIX record lock (`lockf`) on .dvc/tmp/kdlab-workspace.lock, held by the
`dvc` process until it exits. A killed process releases it (the kernel drops a process's record
locks when it dies), and, unlike `flock`, a child forked without exec does not inherit it (DVC
forks its updater daemon, which outlives the command). The file says who holds it, for the
refusal. `kdlab preset` takes it too.

A workspace run (`dvc repro`, `dvc exp run`) refuses every other; queueing (`--queue`, `--temp`:
only the stash step touches the workspace) waits a while for another queueing and refuses
while a workspace run is going.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from kdlab.errors import KdlabError

LOCK_PATH = Path(".dvc/tmp/kdlab-workspace.lock")
QUEUE_WAIT_S = 120.0
"""How long queueing waits for another queueing (each takes a second or two)."""


class WorkspaceBusy(KdlabError):
    """Another run holds this workspace."""


def _holder(handle) -> dict:
    try:
        handle.seek(0)
        return json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}


def _refusal(holder: dict, mode: str) -> str:
    who = holder.get("command") or "another run"
    since = holder.get("since", "")
    pid = holder.get("pid", "?")
    what = (
        "queueing rewrites params.yaml and stashes the workspace for a moment, which would "
        "change the files under that run"
        if mode == "queue"
        else "this one would change params.yaml and the outputs under it"
    )
    advice = (
        "queue it once that run ends"
        if mode == "queue"
        else "one run per workspace: queue this one (`dvc exp run --queue ...`, then `dvc queue "
        "start`) or run it when that one ends"
    )
    return (
        f"this workspace is busy: `{who}` is running (pid {pid}, since {since}); {what}, so "
        f"nothing was changed: {advice}"
    )


def acquire(root: Path, mode: str, command: str, wait_s: float | None = None) -> int:
    """Take the workspace for `mode` ("run" or "queue"); returns the open lock file descriptor
    (keep it open for as long as the workspace is in use). Raises WorkspaceBusy."""
    path = root / LOCK_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    handle = os.fdopen(fd, "r+", closefd=False)
    deadline = time.monotonic() + (QUEUE_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            holder = _holder(handle)
            if mode != "queue" or holder.get("mode") != "queue" or time.monotonic() > deadline:
                os.close(fd)
                raise WorkspaceBusy(_refusal(holder, mode)) from None
            time.sleep(0.2)
    info = {"pid": os.getpid(), "mode": mode, "command": command,
            "since": time.strftime("%H:%M:%S")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


@contextlib.contextmanager
def held(root: Path, mode: str, command: str) -> Iterator[None]:
    """The workspace for the length of a block (what a kdlab command that writes params.yaml
    takes). Outside a DVC repository there is no run to race with: nothing is taken."""
    if not (root / ".dvc").is_dir():
        yield
        return
    fd = acquire(root, mode, command)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
