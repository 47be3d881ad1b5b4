"""Train each teacher once, even when experiments that share it run at the same time.

DVC's run-cache restores a teacher only once the experiment that trains it has finished. With
`dvc queue start -j N` (or jobs started by hand) a student experiment can reach `train_teacher`
while the teacher experiment is still training the very same model, and would train it again.

So the teacher stage takes a per-run lock in a directory every workspace of the repository
shares (next to DVC's cache, which queue workers and SLURM workspaces all use), keyed by the
run's fingerprint (params, dataset, code, device type). The first holder trains and publishes its
outputs there; anyone who was waiting copies them instead of training. The published copy is
written atomically with a manifest of its files' sha256, so a killed trainer leaves nothing
that could be mistaken for a teacher, and a damaged copy is retrained, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from kdlab.checksum import sha256_file
from kdlab.fsutil import atomic_directory

log = logging.getLogger(__name__)

STORE_ENV = "KDLAB_ONCE_DIR"
"""Overrides where the locks and published runs live (default: <dvc cache>/kdlab/once)."""


def default_store_dir() -> Path | None:
    """<DVC cache dir>/kdlab/once of the repository DVC is running this stage in, if any."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    root = os.environ.get("DVC_ROOT")
    if not root:
        return None
    from dvc.repo import Repo

    repo = Repo(root, uninitialized=True)
    try:
        cache_dir = repo.cache.local_cache_dir
        return Path(cache_dir) / "kdlab" / "once" if cache_dir else None
    finally:
        repo.close()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another experiment is training this exact run; waiting for it (%s)",
                     lock_path)  # fmt: skip
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


MANIFEST = "manifest.json"
"""In a published run: the sha256 of every file, checked before anything is copied out."""


def _files(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def _publish(published: Path, outputs: dict[str, Path]) -> None:
    with atomic_directory(published) as tmp:
        for label, path in outputs.items():
            shutil.copytree(path, tmp / label)
        sums = {rel: sha256_file(p) for rel, p in _files(tmp).items()}
        (tmp / MANIFEST).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")


def _damage(published: Path) -> str | None:
    """Why the published run cannot be used (missing, extra or changed files), or None."""
    try:
        manifest = json.loads((published / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return f"{published / MANIFEST} is missing or corrupt"
    found = {rel: p for rel, p in _files(published).items() if rel != MANIFEST}
    if set(found) != set(manifest):
        return f"its files are not those of {MANIFEST}"
    for rel, path in found.items():
        if sha256_file(path) != manifest[rel]:
            return f"{path} does not match its checksum"
    return None


def _copy_out(published: Path, outputs: dict[str, Path]) -> None:
    for label, path in outputs.items():
        with atomic_directory(path) as tmp:
            shutil.copytree(published / label, tmp, dirs_exist_ok=True)


def run_once(
    store_dir: Path | None, fingerprint: str, outputs: dict[str, Path], train: Callable[[], None]
) -> bool:
    """Call `train` unless this run was already published; returns True if it trained.

    `outputs` maps a label to an output directory of the run. Without a store, just train. A
    published run whose files do not match its manifest is removed and trained again.
    """
    if store_dir is None:
        train()
        return True
    published = store_dir / fingerprint
    with _exclusive(store_dir / f"{fingerprint}.lock"):
        if published.is_dir():
            damage = _damage(published)
            if damage is None:
                _copy_out(published, outputs)
                log.info("this run was already trained by another experiment; copied its "
                         "outputs from %s instead of training again", published)  # fmt: skip
                return False
            log.warning("not using the published run %s: %s; training again", published, damage)
            shutil.rmtree(published)
        train()
        _publish(published, outputs)
        return True
