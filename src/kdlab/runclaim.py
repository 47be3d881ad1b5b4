"""One set of params per run: a stage never trains on params that changed after its run began.

Two `dvc exp run -S` in one workspace race: DVC writes the second's `-S` values into params.yaml
before it finds the first one's lock, so the first run's later stages would read (and dvc.lock
would record) the second's params. The `check` stage, which runs first in every run, claims the
run: it writes which `dvc` process is running and the sha256 of params.yaml it validated. Every
later stage of the same `dvc` process compares params.yaml with the claim when it starts and
again when it ends, and stops in one line on a difference, so no output is ever recorded under
params it was not made with. A stage run some other way (`python -m ...`, `dvc repro -s`) has
no claim of its own and is not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kdlab.errors import KdlabError

CLAIM_PATH = Path(".dvc/tmp/kdlab-run.json")
"""Beside DVC's own locks; per workspace (each queue executor has its own .dvc/tmp)."""


class ParamsChangedError(KdlabError):
    """params.yaml is not the file this run's check stage validated."""


def dvc_ancestor(pid: int | None = None) -> int | None:
    """The pid of the `dvc repro` / `dvc exp run` process that runs this one, if any."""
    pid = os.getppid() if pid is None else pid
    for _ in range(32):
        if pid <= 1:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        words = [os.path.basename(w.decode(errors="replace")) for w in cmdline[:3]]
        if "dvc" in words:
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the command name
    return None


def params_sha256(params_path: Path) -> str:
    return hashlib.sha256(params_path.read_bytes()).hexdigest()


def write_claim(params_path: Path, root: Path = Path(".")) -> None:
    """Called by the check stage once params.yaml passed."""
    from kdlab.fsutil import write_bytes_atomic

    claim = {"dvc_pid": dvc_ancestor(), "params_sha256": params_sha256(params_path)}
    write_bytes_atomic(root / CLAIM_PATH, json.dumps(claim).encode())


def verify_claim(params_path: Path, root: Path = Path("."), when: str = "starts") -> None:
    """Refuse when this stage's `dvc` process claimed the run and params.yaml has changed."""
    try:
        claim = json.loads((root / CLAIM_PATH).read_text())
    except (OSError, ValueError):
        return
    mine = dvc_ancestor()
    if mine is None or claim.get("dvc_pid") != mine:
        return
    if claim.get("params_sha256") != params_sha256(params_path):
        raise ParamsChangedError(
            f"{params_path} changed after this run's check stage validated it (another `dvc exp "
            f"run` or an edit in this workspace?); the stage stops as it {when}, so nothing is "
            "recorded under params it was not run with: one run per workspace at a time "
            "(queue them: `dvc exp run --queue`), then run again"
        )
