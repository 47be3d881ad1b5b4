"""Experiments waiting in the local DVC queue (`dvc exp run --queue`), as SLURM jobs.

Each queued entry is a stash commit holding the experiment's params.yaml; its overrides are the
keys that differ from the commit's own params.yaml. Entries queued on another commit are left
alone (they would run other code). Grid teacher experiments (`<dataset>-teacher-s<seed>`) run up
to `train_teacher`, others the whole pipeline; a queued student depends on the queued teacher
of its dataset and seed when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import yaml

from kdlab.flat import flatten
from kdlab.gitutil import git_output
from kdlab.grid import TEACHER_TARGET, Experiment, is_teacher_experiment, teacher_name
from kdlab.schema import load_yaml

log = logging.getLogger(__name__)


def param_overrides(base: dict, changed: dict) -> tuple[tuple[str, str], ...]:
    """`-S key=value` pairs that turn params `base` into `changed`, in `changed`'s key order."""
    old, new = flatten(base), flatten(changed)
    pairs = []
    for key, value in new.items():
        if key not in old or old[key] != value:
            text = yaml.safe_dump(value, default_flow_style=True).strip()
            pairs.append((key, text.removesuffix("\n...").removesuffix(" ...").strip()))
    return tuple(pairs)


def _params_at(repo_root: Path, rev: str) -> dict:
    return load_yaml(git_output(repo_root, "show", f"{rev}:params.yaml")) or {}


def queued_experiments(repo_root: Path) -> list[Experiment]:
    """Queued (not running) DVC experiments on the current commit, teachers first."""
    from dvc.repo import Repo

    repo = Repo(str(repo_root))
    try:
        head = repo.scm.get_rev()
        base = _params_at(repo_root, head)
        found = []
        for entry in repo.experiments.celery_queue.iter_queued():
            if entry.baseline_rev != head:
                log.warning("skipping queued %s: queued on %s, not on HEAD %s",
                            entry.name or entry.stash_rev[:7], entry.baseline_rev[:7],
                            head[:7])  # fmt: skip
                continue
            params = _params_at(repo_root, entry.stash_rev)
            found.append((entry.name or f"exp-{entry.stash_rev[:7]}", params))
    finally:
        repo.close()
    teachers = {n for n, _ in found if is_teacher_experiment(n)}
    experiments = []
    for name, params in found:
        overrides = param_overrides(base, params)
        if name in teachers:
            experiments.append(Experiment(name, "teacher", overrides, (TEACHER_TARGET,)))
            continue
        teacher = teacher_name(params.get("data", {}).get("name", ""), params.get("seed", 0))
        experiments.append(
            Experiment(name, "student", overrides, teacher=teacher if teacher in teachers else None)
        )
    return sorted(experiments, key=lambda e: e.role != "teacher")


def forget_queued(repo_root: Path, names: Iterable[str]) -> None:
    """Remove entries from the local queue once SLURM has them, so they never run twice."""
    from dvc.repo import Repo

    names = list(names)
    if not names:
        return
    repo = Repo(str(repo_root))
    try:
        repo.experiments.celery_queue.remove(names)
    finally:
        repo.close()
