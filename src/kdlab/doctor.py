"""`kdlab doctor`: what kills left around the outputs, found, and removed where that is safe.

- kdlab's own temps (kdlab.fsutil: named by host, pid and start time) whose writer is gone, in
  the whole workspace; another host's are reported, never removed (whether their writer lives
  cannot be known from here). `kdlab check` and each stage's next write remove them too.
- DVC queue executor directories (.dvc/tmp/exps/tmp*) that no live task uses: a killed
  worker's. A task that still runs, or one `kdlab grid requeue --dead` has yet to clear,
  keeps its own.
- temps on the DVC remotes (`.<22 characters>.tmp` beside the objects, what a killed `dvc push`
  leaves): reported; removed with `--clean-remote` when older than an hour (a push may be
  writing a younger one: on a remote there is no process to ask).
- whether the DVC guard (kdlab.dvcguard) is installed in this environment.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from kdlab.fsutil import TEMP_NAME, sweep_stale_temps, temp_owner_alive

SKIP_DIRS = {".git", ".venv", ".tools", "cache", "node_modules"}
REMOTE_TEMP = re.compile(r"^\.[A-Za-z0-9_-]{22}\.tmp$")  # dvc_objects.fs.utils.tmp_fname
REMOTE_TEMP_AGE_S = 3600


def _directories(root: Path) -> Iterator[Path]:
    yield root
    for path in root.iterdir():
        if path.is_dir() and not path.is_symlink() and path.name not in SKIP_DIRS:
            if TEMP_NAME.match(path.name):
                continue  # a temp itself: swept (or kept) whole
            yield from _directories(path)


def sweep_workspace(root: Path) -> tuple[list[Path], list[Path]]:
    """Remove every stale kdlab temp under `root`; (removed, another host's kept)."""
    removed, foreign = [], []
    for directory in _directories(root):
        removed += sweep_stale_temps(directory)
        foreign += [p for p in directory.iterdir()
                    if TEMP_NAME.match(p.name) and temp_owner_alive(p) is None]  # fmt: skip
    return removed, foreign


def stale_executor_dirs(root: Path) -> list[Path]:
    """.dvc/tmp/exps/tmp* directories no task of DVC's run directory claims, or whose task is
    dead and cleared (DVC removes a finished task's executor itself)."""
    from kdlab import show

    exps = root / ".dvc" / "tmp" / "exps"
    claimed = set()
    workers = show.live_workers(root)
    for info_file in exps.glob("run/*/*.run"):
        info = show._json(info_file.read_bytes())
        state = show.task_state(root, info, info_file, workers)
        if info.get("root_dir") and not state.startswith(("collected", "failed")):
            claimed.add(Path(info["root_dir"]).resolve())
    return [p for p in sorted(exps.glob("tmp*"))
            if p.is_dir() and p.resolve() not in claimed]  # fmt: skip


def remote_temps(root: Path) -> list[tuple[str, str, float]]:
    """(remote, path, age in seconds) of each push temp on the repository's DVC remotes."""
    from dvc.repo import Repo

    found = []
    repo = Repo(str(root))
    try:
        for name in repo.config.get("remote", {}):
            try:
                remote = repo.cloud.get_remote(name)
                fs, base = remote.fs, remote.path
                temps = [p for p in fs.find(fs.join(base, "files"))
                         if REMOTE_TEMP.match(p.rsplit("/", 1)[-1])]  # fmt: skip
                infos = [fs.info(p) for p in temps]
            except Exception as exc:  # an unreachable remote: say so, do not fail the rest
                found.append((name, f"(not reachable: {type(exc).__name__})", -1.0))
                continue
            for path, info in zip(temps, infos, strict=True):
                mtime = info.get("mtime") or info.get("created") or time.time()
                mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
                found.append((name, path, time.time() - mtime))
    finally:
        repo.close()
    return found


def remove_remote_temp(root: Path, remote_name: str, path: str) -> None:
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        repo.cloud.get_remote(remote_name).fs.rm_file(path)
    finally:
        repo.close()


def doctor(root: Path, clean_remote: bool = False) -> list[str]:
    from kdlab import dvcguard

    lines = []
    removed, foreign = sweep_workspace(root)
    lines += [f"removed {p.relative_to(root)} (its writer is gone)" for p in removed]
    lines += [f"kept {p.relative_to(root)}: written on another host, whose process cannot be "
              "checked from here" for p in foreign]  # fmt: skip
    for path in stale_executor_dirs(root):
        shutil.rmtree(path, ignore_errors=True)
        lines.append(f"removed {path.relative_to(root)} (a DVC queue executor no live task uses)")
    for remote, path, age in remote_temps(root):
        if age < 0:
            lines.append(f"remote {remote}: {path}")
        elif clean_remote and age > REMOTE_TEMP_AGE_S:
            remove_remote_temp(root, remote, path)
            lines.append(
                f"removed remote {remote}: {path} (a killed push's, {age / 3600:.1f} h old)"
            )
        else:
            hint = (
                ""
                if clean_remote
                else "; `kdlab doctor --clean-remote` removes it when older than an hour"
            )
            lines.append(f"remote {remote}: {path} is a push's temp, {age / 60:.0f} min old{hint}")
    if not dvcguard.installed():
        lines.append(
            "the DVC guard is not installed in this environment (`make install`): a refused "
            "`dvc exp run -S` would rewrite params.yaml before the check stage refuses it"
        )
    if not lines:
        lines.append("nothing left behind: no stray temps, executor directories or remote temps")
    return lines
