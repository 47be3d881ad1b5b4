"""The grid in params.yaml (`grid:`) as a list of named DVC experiments, and queueing them.

One teacher experiment per (dataset, seed), which runs the pipeline up to `train_teacher`; one
pure baseline per (dataset, seed) (kd.method none, never crossed with alpha); and method × alpha
× seed for KD. Teachers come first, so a queue run in order (or SLURM's afterok) trains each
teacher once and every student restores it from DVC's run-cache.

Names are deterministic (`cifar100-teacher-s1`, `cifar100-none-s1`, `cifar100-at-a0.5-s1`), so
queueing the grid twice finds the experiments already queued or finished and adds nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kdlab.config import build_dataclass, check_choice, check_range
from kdlab.errors import ConfigError

log = logging.getLogger(__name__)

TEACHER_TARGET = "train_teacher"
_TEACHER_NAME = re.compile(r"^(?P<dataset>[a-z0-9]+)-teacher-s(?P<seed>\d+)$")


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """`grid:` which experiments `kdlab grid queue` and `kdlab slurm submit` create."""

    datasets: tuple[str, ...] = ("digits",)
    """Datasets (data.name), one teacher per dataset and seed."""
    methods: tuple[str, ...] = ("logit",)
    """KD methods crossed with alphas and seeds (`none` is the baseline; see `baseline`)."""
    alphas: tuple[float, ...] = (0.5,)
    """kd.alpha values for every KD method."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: every teacher, baseline and KD student is run once per seed."""
    baseline: bool = True
    """Also run the pure student (kd.method none) once per dataset and seed."""

    def validate(self, path: str) -> None:
        from kdlab.data.datasets import DATASETS
        from kdlab.distill.registry import METHODS

        for field in ("datasets", "methods", "alphas", "seeds"):
            values = getattr(self, field)
            if not values:
                raise ConfigError(f"{path}.{field} must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{path}.{field} lists a value twice: {list(values)}")
        for i, name in enumerate(self.datasets):
            check_choice(f"{path}.datasets[{i}]", name, DATASETS)
        kd_methods = [m for m in METHODS if m != "none"]
        for i, name in enumerate(self.methods):
            check_choice(f"{path}.methods[{i}]", name, kd_methods)
        for i, alpha in enumerate(self.alphas):
            check_range(f"{path}.alphas[{i}]", alpha, 0.0, 1.0, low_open=True)
        for i, seed in enumerate(self.seeds):
            check_range(f"{path}.seeds[{i}]", seed, 0, 2**32 - 1)


def load_grid(raw: Any) -> GridConfig:
    if raw is None:
        # an empty `grid:` must not silently plan the built-in defaults
        raise ConfigError(
            "grid must be a mapping with datasets, methods, alphas, seeds (and baseline), got null"
        )
    return build_dataclass(GridConfig, raw, "grid")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One grid point: a DVC experiment name, its `-S` overrides and its stage targets."""

    name: str
    role: str
    """teacher | baseline | student"""
    overrides: tuple[tuple[str, str], ...]
    """(params key, value) pairs, as `dvc exp run -S key=value`."""
    targets: tuple[str, ...] = ()
    """Stages to run; empty = the whole pipeline."""
    teacher: str | None = None
    """Name of the teacher experiment this one restores its teacher from."""

    @property
    def set_params(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.overrides]

    def dvc_args(self) -> list[str]:
        """Arguments after `dvc exp run`: name, overrides, targets."""
        args = ["-n", self.name]
        for item in self.set_params:
            args += ["-S", item]
        return args + list(self.targets)

    def queue_command(self) -> str:
        return shlex.join(["dvc", "exp", "run", "--queue", *self.dvc_args()])


def alpha_text(alpha: float) -> str:
    return f"{alpha:g}"


def teacher_name(dataset: str, seed: int) -> str:
    return f"{dataset}-teacher-s{seed}"


def is_teacher_experiment(name: str | None) -> bool:
    """Grid teacher experiments stop after train_teacher: they have no student results."""
    return bool(name) and _TEACHER_NAME.match(name) is not None


def plan_grid(grid: GridConfig) -> list[Experiment]:
    """Every experiment of the grid: teachers, then baselines, then KD students."""
    teachers, baselines, students = [], [], []
    for dataset in grid.datasets:
        for seed in grid.seeds:
            base = (("data.name", dataset), ("seed", str(seed)))
            teacher = teacher_name(dataset, seed)
            teachers.append(Experiment(teacher, "teacher", base, (TEACHER_TARGET,)))
            if grid.baseline:
                overrides = (*base, ("kd.method", "none"))
                name = f"{dataset}-none-s{seed}"
                baselines.append(Experiment(name, "baseline", overrides, teacher=teacher))
            for method in grid.methods:
                for alpha in grid.alphas:
                    overrides = (*base, ("kd.method", method), ("kd.alpha", alpha_text(alpha)))
                    name = f"{dataset}-{method}-a{alpha_text(alpha)}-s{seed}"
                    students.append(Experiment(name, "student", overrides, teacher=teacher))
    return teachers + baselines + students


def load_grid_plan(params_path: Path) -> list[Experiment]:
    """Read params.yaml, validate it, its `grid:` section and every grid point (as each
    experiment would run), and plan the grid. Nothing is planned if one point is invalid."""
    from kdlab.validate import check_file

    params = check_file(params_path)
    if "grid" not in params.extra:
        raise ConfigError(f"{params_path} has no grid: section (datasets, methods, alphas, seeds)")
    return plan_grid(load_grid(params.extra["grid"]))


# ----------------------------------------------------------------------------------------------
# DVC: what exists already, and queueing
# ----------------------------------------------------------------------------------------------


def finished_experiments(repo_root: Path, baseline_rev: str) -> set[str]:
    """Names of experiments committed on `baseline_rev` (refs/exps/<ab>/<cdef...>/<name>)."""
    from kdlab.gitutil import git_output

    prefix = f"refs/exps/{baseline_rev[:2]}/{baseline_rev[2:]}/"
    refs = git_output(repo_root, "for-each-ref", "--format=%(refname)", prefix).split()
    return {ref[len(prefix) :] for ref in refs if ref.startswith(prefix)}


@dataclasses.dataclass(frozen=True)
class QueueState:
    queued: set[str]
    running: set[str]
    failed: set[str]
    finished: set[str]


def queue_state(repo) -> QueueState:
    """What DVC's queue and refs say about experiment names on the current commit."""
    queue = repo.experiments.celery_queue
    queued = {e.name for e in queue.iter_queued() if e.name}
    running = {e.name for e in queue.iter_active() if e.name}
    failed = {r.entry.name for r in queue.iter_failed() if r.entry.name}
    finished = finished_experiments(Path(repo.root_dir), repo.scm.get_rev())
    return QueueState(queued, running, failed - finished, finished)


def queue_grid(
    repo_root: Path, experiments: Sequence[Experiment], dry_run: bool = False
) -> list[tuple[Experiment, str]]:
    """Queue the experiments not already queued, running or finished; returns (exp, action)."""
    from dvc.repo import Repo

    repo = Repo(str(repo_root))
    try:
        state = queue_state(repo)
        actions = []
        for exp in experiments:
            if exp.name in state.finished:
                actions.append((exp, "finished"))
            elif exp.name in state.queued or exp.name in state.running:
                actions.append((exp, "already queued"))
            else:
                retry = exp.name in state.failed
                if not dry_run:
                    if retry:
                        repo.experiments.celery_queue.remove([exp.name])
                    repo.experiments.run(targets=list(exp.targets) or None,
                                         params=exp.set_params, queue=True,
                                         name=exp.name)  # fmt: skip
                verb = "would queue" if dry_run else "queued"
                actions.append((exp, f"{verb} (failed before)" if retry else verb))
        return actions
    finally:
        repo.close()


def format_plan(actions: Iterable[tuple[Experiment, str]]) -> str:
    rows = [(exp.name, action, exp.queue_command()) for exp, action in actions]
    if not rows:
        return ""
    width = max(len(name) for name, _, _ in rows)
    awidth = max(len(action) for _, action, _ in rows)
    return "\n".join(f"{n:<{width}}  {a:<{awidth}}  {c}" for n, a, c in rows) + "\n"
