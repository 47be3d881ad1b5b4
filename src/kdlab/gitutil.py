"""Reading a git repository: one helper, so every caller fails with the same one-line error."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kdlab.errors import KdlabError


def git_output(repo: Path, *args: str) -> str:
    """stdout of `git <args>` in `repo`, stripped; a KdlabError with git's message on failure."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KdlabError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()
