"""Writing files and whole directories atomically, with the permissions the umask allows.

`tempfile` creates files 0600 and directories 0700; renamed into place as they are, a lab group
sharing the DVC cache (`dvc config cache.shared group`) or the train-once store could not read
them. Everything written here ends with the mode an ordinary `open()`/`mkdir()` would give.

Every temporary file or directory kdlab writes is named by its owner:
`.<name>.kdlab-tmp-<host>-<pid>-<start>-<random>` (`TEMP_MARK`), `<start>` being the owning
process's start time, so a pid the kernel has since reused is not taken for the owner. A writer
removes the stale temps of the same name (their owner on this host is gone) before it makes its
own; `kdlab doctor` sweeps the whole workspace. Temps of another host (a shared file system) are
never removed from here: whether their owner lives cannot be known. `.gitignore` ignores the
pattern, so a kill never leaves a `??` in `git status`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kdlab.errors import KdlabError


class WriteError(KdlabError):
    """An output could not be written: disk full, read-only or no permission."""


ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Failures of the machine, not of kdlab: reported in one line like bad input."""


TEMP_MARK = ".kdlab-tmp-"
TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.kdlab-tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<start>\d+)-"
)
"""A kdlab temp's name: what it stands for, and the host, pid and start time of its writer."""


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/<pid>/stat, field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@functools.cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def temp_prefix(name: str) -> str:
    """The prefix of a temp for `name` written by this process (tempfile adds a random tail)."""
    pid = os.getpid()
    return f".{name}{TEMP_MARK}{_host()}-{pid}-{_start_time(pid) or 0}-"


def temp_owner_alive(entry: str | Path) -> bool | None:
    """Whether the process that wrote a kdlab temp still runs: None for a name that is not a
    kdlab temp, or one written on another host (unknowable from here)."""
    match = TEMP_NAME.match(Path(entry).name)
    if match is None:
        return None
    if match["host"] != _host():
        return None
    return _start_time(int(match["pid"])) == int(match["start"])


def remove_temp(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temps(directory: Path, name: str | None = None) -> list[Path]:
    """Remove the kdlab temps in `directory` (those for `name`, or all) whose writer on this
    host is gone; return what was removed."""
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        if temp_owner_alive(entry) is False:
            remove_temp(entry)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def temp_directory(parent: str | Path, name: str) -> Iterator[Path]:
    """A scratch directory in `parent`, named as every kdlab temp, removed when the block ends."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(parent, name)
    path = Path(tempfile.mkdtemp(prefix=temp_prefix(name), dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _reraise(exc: OSError, path: Path) -> None:
    if exc.errno in ENVIRONMENT_ERRNOS:
        raise WriteError(describe_os_error(exc, path)) from None
    raise exc


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def describe_os_error(exc: OSError, path: str | Path) -> str:
    """One line: the path, the cause, and what restores the last good state."""
    cause = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno, exc.strerror or type(exc).__name__)
    return (
        f"cannot write {path}: {cause}; nothing incomplete was kept: free space or fix the "
        "permissions, then run the stage again"
    )


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, rename, fsync dir."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(path.parent, path.name)  # a killed writer's leftovers
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp",
                                        dir=path.parent)  # fmt: skip
    except OSError as exc:
        _reraise(exc, path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _chmod_default(Path(tmp_name), directory=False)
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        _reraise(exc, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (a crash right after os.replace keeps the new file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `out_dir`; when the block succeeds it replaces
    `out_dir`, when it fails it is removed. Readers never see a half-written directory."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(out_dir.parent, out_dir.name)  # a killed writer's leftovers
        tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir.name), dir=out_dir.parent))
    except OSError as exc:
        _reraise(exc, out_dir)
    try:
        yield tmp_dir
        _chmod_default(tmp_dir, directory=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _reraise(exc, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    fsync_dir(out_dir.parent)


def check_writable(directory: str | Path, needed_bytes: int = 0) -> None:
    """Refuse before work starts: `directory` (created if missing) must take a file and have
    `needed_bytes` free."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        _reraise(exc, directory)
    if free < needed_bytes:
        raise WriteError(
            f"cannot write {directory}: {free / 2**20:.1f} MiB free, this run needs about "
            f"{needed_bytes / 2**20:.1f} MiB; free space and run the stage again"
        )
