"""Git + DVC repositories for integration tests: the project's working tree as a fresh clone."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from kdlab.plots_page import PAGE, write_page

from .conftest import REPO_ROOT, run, tiny_params, write_params

TINY = {"teacher.epochs": 2, "student.epochs": 2,
        "teacher.save_epochs": [1], "student.save_epochs": [1],
        "extract.n_samples": 128, "analyze.sae_epochs": 5, "analyze.ica_components": 4}  # fmt: skip


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], cwd=repo).stdout


def dvc(repo: Path, *args: str) -> str:
    proc = run(["dvc", *args], cwd=repo)
    return proc.stdout + proc.stderr


def set_identity(repo: Path) -> None:
    git(repo, "config", "user.name", "kdlab tests")
    git(repo, "config", "user.email", "tests@kdlab.invalid")


def make_clone(base: Path, params: dict | None = None) -> Path:
    """The project's files (tracked + untracked, not ignored) as a repo, and a clone of it."""
    origin, clone = base / "origin", base / "clone"
    files = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT).stdout
    for rel in filter(None, files.split("\0")):
        src = REPO_ROOT / rel
        if src.is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, origin / rel)
    git(origin.parent, "init", "-q", "-b", "main", str(origin))
    set_identity(origin)
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "snapshot of the working tree")
    git(base, "clone", "-q", str(origin), str(clone))
    write_page(clone / PAGE)  # git-ignored: `make install` writes it in a real clone
    set_identity(clone)
    write_params(clone / "params.yaml", params if params is not None else tiny_params(**TINY))
    git(clone, "commit", "-qam", "tiny epochs for the test")
    return clone


def stale_in_status(status: str) -> set[str]:
    """The stages `dvc status` reports as changed, leaving out the `check` stage's permanent
    "always changed" (it preflights every run, kdlab.preflight) unless something else changed
    for it too."""
    stale, stage, reasons = set(), None, []
    for line in [*status.splitlines(), "end:"]:
        match = re.match(r"^([\w-]+):\s*$", line)
        if match:
            if stage and any(r != "always changed" for r in reasons):
                stale.add(stage)
            stage, reasons = match.group(1), []
        elif line.strip() and stage:
            reasons.append(line.strip())
    return stale


def assert_up_to_date(status: str) -> None:
    """Nothing to reproduce: DVC's "up to date", or only `check`'s "always changed"."""
    assert "up to date" in status.lower() or stale_in_status(status) == set(), status


def restore_tracked(repo: Path) -> None:
    """Every tracked file as committed. Not `git checkout -- .`: after a refused `dvc exp run
    -S`, git's index can hold the rewritten params.yaml's stat data with HEAD's blob (same
    size), so git sees no change and checks nothing out."""
    (repo / ".git/index").unlink()
    git(repo, "reset", "-q", "--hard", "HEAD")
