"""The grid in params.yaml (`grid:`) as a list of named DVC experiments, and queueing them.

One teacher experiment per (dataset, seed), which runs the pipeline up to `train_teacher`; one
pure baseline per (dataset, seed) (kd.method none, never crossed with alpha); and method × alpha
× seed for KD. Teachers come first, so a queue run in order (or SLURM's afterok) trains each
teacher once and every student restores it from DVC's run-cache.

`grid.axes` crosses any other param into the grid (a param path -> its values), by what the
param changes:
    seed, device, data.*, teacher.*   the teacher: one teacher per value, and every baseline and
                                      student of that value restores that teacher
    kd.<method>.*                     that method's students only
    kd.*  (e.g. kd.alpha)             every KD student, never the pure baseline
    anything else (student.*, ...)    the baseline and every KD student
Params that must change together are one axis, their paths joined by commas and each value a
list: `teacher.arch,student.arch: [[resnet56, resnet20], [resnet110, resnet32]]` (pairs, not
their cross product). `grid.alphas` is a list for every method, or a mapping method -> list.
The grid's own fields (datasets, methods, alphas, seeds) are not axes; grid.* and slurm.* are
not params of an experiment.

Names are deterministic (`cifar100-teacher-s1`, `cifar100-none-s1`, `cifar100-at-a0.5-s1`;
with axes `cifar100-logit-a0.5-temperature8-s1`, `cifar100-teacher-arch_resnet32-s1`), so
queueing the grid twice finds the experiments already queued or finished and adds nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdlab.errors import ConfigError
from kdlab.schema import build_dataclass, check_choice, check_finite, check_range

log = logging.getLogger(__name__)

TEACHER_TARGET = "train_teacher"
_TEACHER_NAME = re.compile(r"^[a-z0-9_]+-teacher(-[^-]+)*-s\d+$")

TEACHER_PARAMS = ("seed", "device", "data", "teacher", "external")
"""Param sections (or keys) the teacher depends on: the params of `prepare` and `train_teacher`
in dvc.yaml (a test keeps them equal)."""
OWN_FIELDS = {"data.name": "datasets", "kd.method": "methods", "kd.alpha": "alphas",
              "seed": "seeds"}  # fmt: skip
"""Params the grid sweeps with its own fields, never as axes."""


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """`grid:` which experiments `kdlab grid queue` and `kdlab slurm submit` create."""

    datasets: tuple[str, ...] = ("digits",)
    """Datasets (data.name), one teacher per dataset and seed."""
    methods: tuple[str, ...] = ("logit", "at")
    """KD methods crossed with alphas and seeds (`none` is the baseline; see `baseline`)."""
    alphas: tuple[float, ...] | dict = (0.5, 0.9)
    """kd.alpha values for every KD method, or a mapping method -> its values."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds: every teacher, baseline and KD student is run once per seed."""
    baseline: bool = True
    """Also run the pure student (kd.method none) once per dataset and seed."""
    axes: dict = dataclasses.field(default_factory=dict)
    """Any other param path -> list of values, crossed into the grid (see the module doc)."""

    def validate(self, path: str) -> None:
        from kdlab.data.datasets import DATASETS
        from kdlab.distill.specs import load_specs

        lists = {"datasets": self.datasets, "methods": self.methods, "seeds": self.seeds}
        if isinstance(self.alphas, dict):
            missing = [m for m in self.methods if m not in self.alphas]
            extra = [m for m in self.alphas if m not in self.methods]
            if missing or extra:
                raise ConfigError(
                    f"{path}.alphas must have one entry per grid method "
                    f"({', '.join(self.methods)}): "
                    + (f"missing {', '.join(missing)}" if missing else f"extra {extra[0]!r}")
                )
            for method, values in self.alphas.items():
                if not isinstance(values, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in values
                ):
                    raise ConfigError(f"{path}.alphas.{method} must be a list of numbers, "
                                      f"got {values!r}")  # fmt: skip
                lists[f"alphas.{method}"] = tuple(values)
        else:
            lists["alphas"] = self.alphas
        for field, values in lists.items():
            # no methods: a grid of teachers (and baselines), or of one model (student.arch none)
            if not values and field != "methods":
                raise ConfigError(f"{path}.{field} must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{path}.{field} lists a value twice: {list(values)}")
        for i, name in enumerate(self.datasets):
            check_choice(f"{path}.datasets[{i}]", name, DATASETS)
        kd_methods = [m for m in load_specs() if m != "none"]
        for i, name in enumerate(self.methods):
            check_choice(f"{path}.methods[{i}]", name, kd_methods)
        for field, values in lists.items():
            if field.startswith("alphas"):
                for i, alpha in enumerate(values):
                    check_range(f"{path}.{field}[{i}]", alpha, 0.0, 1.0, low_open=True)
        for i, seed in enumerate(self.seeds):
            check_range(f"{path}.seeds[{i}]", seed, 0, 2**32 - 1)
        for key, values in self.axes.items():
            check_axis(f"{path}.axes", key, values)

    def alphas_for(self, method: str) -> tuple[float, ...]:
        return tuple(self.alphas[method]) if isinstance(self.alphas, dict) else self.alphas


_PATH = r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*"


def axis_paths(key: str) -> list[str]:
    """The params an axis sets: one, or several joined by commas (changed together)."""
    return [part.strip() for part in key.split(",")]


def check_axis(path: str, key: Any, values: Any) -> None:
    """An axis names params the grid does not sweep otherwise, with distinct values."""
    if not isinstance(key, str) or not re.fullmatch(rf"{_PATH}(\s*,\s*{_PATH})*", key):
        raise ConfigError(f"{path} keys must be param paths such as kd.logit.temperature "
                          f"(several joined by commas), got {key!r}")  # fmt: skip
    paths = axis_paths(key)
    for param in paths:
        if param in OWN_FIELDS:
            raise ConfigError(f"{path}.{key}: sweep {param} with grid.{OWN_FIELDS[param]}, "
                              "not an axis")  # fmt: skip
        if param.split(".")[0] in ("grid", "slurm"):
            raise ConfigError(f"{path}.{key}: {param.split('.')[0]}.* is not a param of an "
                              "experiment")  # fmt: skip
    axis_scope(key, path)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{path}.{key} must be a non-empty list of values, got {values!r}")
    check_finite(f"{path}.{key}", values)
    if len(paths) > 1:
        for i, value in enumerate(values):
            if not isinstance(value, list) or len(value) != len(paths):
                raise ConfigError(f"{path}.{key}[{i}] must be a list of {len(paths)} values, "
                                  f"one per param, got {value!r}")  # fmt: skip
    texts = [value_text(v) for v in values]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"{path}.{key} lists a value twice: {values}")


def check_axes_exist(raw: Mapping, grid: GridConfig) -> None:
    """Every axis must name a param params.yaml has (a typo is not a new param)."""
    for key in grid.axes:
        for param in axis_paths(key):
            node: Any = raw
            parts = param.split(".")
            if len(parts) == 3 and parts[0] in ("teacher", "student") and parts[1] == "size":
                continue  # a size over the preset's (checked with each experiment's params)
            for part in parts:
                if not isinstance(node, Mapping) or part not in node:
                    raise ConfigError(f"grid.axes.{key}: {param} is not a param of params.yaml "
                                      f"(no {part!r} there)")  # fmt: skip
                node = node[part]
            if isinstance(node, Mapping):
                raise ConfigError(f"grid.axes.{key}: {param} is a section, not a param: name "
                                  f"one of its keys ({', '.join(node)})")  # fmt: skip


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


def value_text(value: Any) -> str:
    """A value as `-S` writes it and as it reads in a name: 0.5, 8, resnet32, true, [a,b]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    return str(value)


def param_scope(param: str) -> str:
    """What a param changes: teacher | method:<name> | kd | student. Every nested section of
    `kd` is a method's own (kdlab.config refuses any other), so no registry is needed here."""
    parts = param.split(".")
    if parts[0] in TEACHER_PARAMS:
        return "teacher"
    if parts[0] == "kd":
        return f"method:{parts[1]}" if len(parts) > 2 else "kd"
    return "student"


def axis_scope(key: str, path: str = "grid.axes") -> str:
    """What an axis changes. Params changed together must reach the same experiments, except
    that a teacher param takes student params along (both reach every student)."""
    scopes = {param_scope(p) for p in axis_paths(key)}
    if scopes <= {"teacher", "student"} and "teacher" in scopes:
        return "teacher"
    if len(scopes) != 1:
        raise ConfigError(f"{path}.{key}: params changed together must reach the same "
                          f"experiments; these reach {', '.join(sorted(scopes))}")  # fmt: skip
    return scopes.pop()


def axis_labels(keys: Sequence[str]) -> dict[str, str]:
    """Each axis's short name in experiment names: its last part, or more where two collide."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = "_".join(parts[-n:])
            if sum(k.split(".")[-n:] == parts[-n:] for k in keys) == 1:
                break
        labels[key] = label
    return labels


def axis_token(label: str, value: Any) -> str:
    text = value_text(value).replace(",", "+").replace("-", "neg")
    text = re.sub(r"[^A-Za-z0-9.+_]", "_", text)
    return f"{label}{text}" if re.match(r"[0-9.-]", value_text(value)) else f"{label}_{text}"


def teacher_name(dataset: str, seed: int, tokens: Sequence[str] = ()) -> str:
    return "-".join([dataset, "teacher", *tokens, f"s{seed}"])


def is_teacher_experiment(name: str | None) -> bool:
    """Grid teacher experiments stop after train_teacher: they have no student results."""
    return bool(name) and _TEACHER_NAME.match(name) is not None


def _points(grid: GridConfig, scopes: Sequence[str]) -> list[tuple[tuple, tuple]]:
    """Every combination of the axes whose scope is in `scopes`: (overrides, name tokens)."""
    keys = [k for k in grid.axes if axis_scope(k) in scopes]
    labels = axis_labels([p for k in grid.axes for p in axis_paths(k)])
    points = [((), ())]
    for key in keys:
        paths = axis_paths(key)
        crossed = []
        for over, tokens in points:
            for value in grid.axes[key]:
                values = value if len(paths) > 1 else [value]
                sets = tuple((p, value_text(v)) for p, v in zip(paths, values, strict=True))
                token = "+".join(axis_token(labels[p], v) for p, v in zip(paths, values,
                                                                          strict=True))  # fmt: skip
                crossed.append(((*over, *sets), (*tokens, token)))
        points = crossed
    return points


def plan_grid(grid: GridConfig, one_model: bool = False) -> list[Experiment]:
    """Every experiment of the grid: teachers, then baselines, then KD students. With
    `one_model` (`student.arch: none`), one whole-pipeline experiment per dataset × seed ×
    teacher axes, named `<dataset>-model[-<axes>]-s<seed>`, and nothing else."""
    if one_model:
        return plan_one_model(grid)
    teachers, baselines, students = [], [], []
    for dataset in grid.datasets:
        for t_over, t_tokens in _points(grid, ["teacher"]):
            for seed in grid.seeds:
                base = (("data.name", dataset), ("seed", str(seed)), *t_over)
                teacher = teacher_name(dataset, seed, t_tokens)
                teachers.append(Experiment(teacher, "teacher", base, (TEACHER_TARGET,)))
                for s_over, s_tokens in _points(grid, ["student"]) if grid.baseline else []:
                    overrides = (*base, ("kd.method", "none"), *s_over)
                    name = "-".join([dataset, "none", *t_tokens, *s_tokens, f"s{seed}"])
                    baselines.append(Experiment(name, "baseline", overrides, teacher=teacher))
                for method in grid.methods:
                    scopes = ["student", "kd", f"method:{method}"]
                    for alpha in grid.alphas_for(method):
                        for k_over, k_tokens in _points(grid, scopes):
                            overrides = (*base, ("kd.method", method),
                                         ("kd.alpha", alpha_text(alpha)), *k_over)  # fmt: skip
                            tokens = [*t_tokens, *k_tokens, f"s{seed}"]
                            name = "-".join([dataset, method, f"a{alpha_text(alpha)}", *tokens])
                            students.append(Experiment(name, "student", overrides, teacher=teacher))
    return teachers + baselines + students


def plan_one_model(grid: GridConfig) -> list[Experiment]:
    if grid.methods or grid.baseline:
        raise ConfigError("student.arch none trains no student: set grid.methods to [] and "
                          "grid.baseline to false (the grid is then one experiment per dataset, "
                          "seed and axis point)")  # fmt: skip
    models = []
    for dataset in grid.datasets:
        for t_over, t_tokens in _points(grid, ["teacher"]):
            for seed in grid.seeds:
                overrides = (("data.name", dataset), ("seed", str(seed)), *t_over)
                name = "-".join([dataset, "model", *t_tokens, f"s{seed}"])
                models.append(Experiment(name, "model", overrides))
    return models


def load_grid_plan(params_path: Path) -> list[Experiment]:
    """Read params.yaml, validate it, its `grid:` section and every grid point (as each
    experiment would run), and plan the grid. Nothing is planned if one point is invalid."""
    from kdlab.validate import check_file

    params = check_file(params_path)
    if "grid" not in params.extra:
        raise ConfigError(f"{params_path} has no grid: section (datasets, methods, alphas, seeds)")
    return plan_grid(load_grid(params.extra["grid"]), params.one_model)


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
