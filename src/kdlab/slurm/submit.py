"""`kdlab slurm submit` and `kdlab slurm status`: one SLURM job per experiment.

Each job clones the repository at the submitted commit into its own workspace on shared
scratch, uses the repository's DVC cache (so the run-cache restores teachers and data), runs
`dvc exp run` with the experiment's overrides, and ends with `dvc exp push` into this
repository, where `dvc exp show` then lists it. Students wait for their teacher's job
(`afterok`); a failed teacher cancels them instead of leaving them waiting forever.

The ledger makes submission idempotent: an experiment is skipped when it is finished (its
experiment ref exists on the commit) or its job is alive; a job that died without finishing is
submitted again, into the same workspace, so it resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import ConfigError, KdlabError
from kdlab.gitutil import git_output
from kdlab.grid import Experiment, finished_experiments
from kdlab.slurm import cluster
from kdlab.slurm.config import SlurmConfig
from kdlab.slurm.ledger import JobRecord, Ledger, locked_ledger

STATE_DIR = Path(".kdlab") / "slurm"
JOB_PREFIX = "kdlab-"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclasses.dataclass(frozen=True)
class Context:
    """Where and at which commit experiments run."""

    repo: Path
    commit: str
    cache_dir: Path
    has_remote: bool
    config: SlurmConfig

    @property
    def state_dir(self) -> Path:
        return self.repo / STATE_DIR

    @property
    def scratch(self) -> Path:
        return Path(self.config.scratch) if self.config.scratch else self.repo / ".kdlab/workspaces"

    def workspace(self, exp: Experiment) -> Path:
        return self.scratch / f"{exp.name}-{self.commit[:8]}"

    def log_path(self, exp: Experiment, job_id: str = "%j") -> Path:
        """One log per job (a requeued job keeps its id and appends to its log)."""
        return self.state_dir / "logs" / f"{exp.name}-{job_id}.out"

    def script_path(self, exp: Experiment) -> Path:
        return self.state_dir / "scripts" / f"{exp.name}.sbatch"


def make_context(repo: Path, config: SlurmConfig, allow_dirty: bool = False) -> Context:
    """The repository's commit, DVC cache and remote; refuses uncommitted changes."""
    from dvc.repo import Repo

    repo = repo.resolve()
    changed = git_output(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    if changed and not allow_dirty:
        raise KdlabError(
            f"uncommitted changes ({changed[0].strip()}{', ...' if len(changed) > 1 else ''}): "
            "jobs run the committed code, so commit them first (or pass --allow-dirty)"
        )
    dvc_repo = Repo(str(repo))
    try:
        cache_dir = Path(dvc_repo.cache.local_cache_dir)
        has_remote = bool(dvc_repo.config["core"].get("remote"))
    finally:
        dvc_repo.close()
    template = repo / config.template
    if not template.is_file():
        raise ConfigError(f"slurm.template {config.template} not found in {repo}")
    return Context(repo, git_output(repo, "rev-parse", "HEAD"), cache_dir, has_remote, config)


def render_script(ctx: Context, exp: Experiment) -> str:
    """The sbatch script of one experiment, from the template in slurm/."""
    venv_bin = Path(sys.executable).parent
    q = shlex.quote
    values = {
        "job_name": JOB_PREFIX + exp.name,
        "log_path": str(ctx.log_path(exp)),
        "signal_seconds": str(ctx.config.signal_seconds),
        "sbatch_lines": "\n".join(f"#SBATCH {opt}" for opt in ctx.config.sbatch_options()),
        "repo": q(str(ctx.repo)),
        "workspace": q(str(ctx.workspace(exp))),
        "commit": ctx.commit,
        "cache_dir": q(str(ctx.cache_dir)),
        "name": q(exp.name),
        "venv_bin": q(str(venv_bin)),
        "setup": ctx.config.setup,
        "fetch": "dvc fetch --run-cache || true" if ctx.has_remote else "",
        "dvc_args": shlex.join(exp.dvc_args()),
        "push_args": "--run-cache" if ctx.has_remote else "--no-cache",
    }
    template = (ctx.repo / ctx.config.template).read_text()

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"slurm.template uses {{{{{key}}}}}; known: {', '.join(values)}")
        return values[key]

    return _PLACEHOLDER.sub(fill, template)


@dataclasses.dataclass(frozen=True)
class ExpStatus:
    name: str
    state: str
    """finished | a live SLURM state (PENDING, RUNNING, ...) | dead (<last state>) | new"""
    job_id: str | None
    attempts: int

    @property
    def needs_submit(self) -> bool:
        return self.state == "new" or self.state.startswith("dead")

    @property
    def live(self) -> bool:
        return cluster.is_live(self.state)


def experiment_statuses(
    ctx: Context, ledger: Ledger, experiments: Sequence[Experiment]
) -> dict[str, ExpStatus]:
    """Finished (its ref exists on the commit), live (squeue), dead or new, per experiment."""
    finished = finished_experiments(ctx.repo, ctx.commit)
    live = cluster.live_jobs()
    live_by_name = {name[len(JOB_PREFIX) :]: (job_id, state)
                    for job_id, (name, state) in live.items()
                    if name.startswith(JOB_PREFIX)}  # fmt: skip
    records = {exp.name: ledger.get(exp.name) for exp in experiments}
    ids = [r.job_id for r in records.values() if r is not None and r.commit == ctx.commit]
    states = cluster.job_states(ids, live) if ids else {}
    statuses = {}
    for exp in experiments:
        record = records[exp.name]
        current = record is not None and record.commit == ctx.commit
        job_id = record.job_id if current else None
        attempts = record.attempts if current else 0
        if exp.name in finished:
            state = "finished"
        elif job_id is not None and cluster.is_live(states[job_id]):
            state = states[job_id]
        elif exp.name in live_by_name:
            # Live but not in the ledger (a lost ledger): never submit it twice.
            job_id, state = live_by_name[exp.name]
        elif job_id is not None:
            state = f"dead ({states[job_id]})"
        else:
            state = "new"
        statuses[exp.name] = ExpStatus(exp.name, state, job_id, attempts)
    return statuses


def select(experiments: Sequence[Experiment], pattern: str | None) -> list[Experiment]:
    """Experiments whose name matches the glob, plus the teachers they need."""
    if not pattern:
        return list(experiments)
    chosen = {e.name for e in experiments if fnmatch.fnmatchcase(e.name, pattern)}
    if not chosen:
        raise ConfigError(f"--only {pattern!r} matches no experiment of the grid")
    needed = chosen | {e.teacher for e in experiments if e.name in chosen and e.teacher}
    return [e for e in experiments if e.name in needed]


@dataclasses.dataclass(frozen=True)
class Action:
    exp: Experiment
    what: str
    """submitted | resubmitted | would submit | skipped (<state>)"""
    job_id: str | None
    dependency: str | None


def submit(
    ctx: Context, experiments: Sequence[Experiment], dry_run: bool = False
) -> tuple[list[Action], dict[str, str]]:
    """Submit what is new or dead, teachers first; returns actions and the rendered scripts."""
    actions, scripts = [], {}
    with locked_ledger(ctx.state_dir / "ledger.json") as ledger:
        statuses = experiment_statuses(ctx, ledger, experiments)
        job_of = {name: s.job_id for name, s in statuses.items() if s.live}
        for exp in experiments:
            status = statuses[exp.name]
            if not status.needs_submit:
                actions.append(Action(exp, f"skipped ({status.state})", status.job_id, None))
                continue
            teacher_job = job_of.get(exp.teacher) if exp.teacher else None
            dependency = f"afterok:{teacher_job}" if teacher_job else None
            script = render_script(ctx, exp)
            scripts[exp.name] = script
            if dry_run:
                actions.append(Action(exp, "would submit", None, dependency))
                continue
            job_id = _submit_one(ctx, ledger, exp, script, dependency, status)
            job_of[exp.name] = job_id
            what = "resubmitted" if status.state != "new" else "submitted"
            actions.append(Action(exp, what, job_id, dependency))
    return actions, scripts


def _submit_one(
    ctx: Context, ledger: Ledger, exp: Experiment, script: str, dependency: str | None,
    status: ExpStatus,
) -> str:  # fmt: skip
    path = ctx.script_path(exp)
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx.log_path(exp).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    job_id = cluster.sbatch(str(path), dependency)
    previous = ledger.get(exp.name)
    history = previous.job_ids if previous is not None and previous.commit == ctx.commit else []
    record = JobRecord(
        name=exp.name, job_id=job_id, commit=ctx.commit, attempts=status.attempts + 1,
        workspace=str(ctx.workspace(exp)), log=str(ctx.log_path(exp, job_id)),
        submitted=dt.datetime.now().isoformat(timespec="seconds"), job_ids=[*history, job_id],
    )  # fmt: skip
    ledger.put(record)
    ledger.save()
    return job_id


def status_table(ctx: Context, experiments: Sequence[Experiment]) -> str:
    with locked_ledger(ctx.state_dir / "ledger.json") as ledger:
        statuses = experiment_statuses(ctx, ledger, experiments)
    rows = [("experiment", "state", "job", "attempts")]
    rows += [(s.name, s.state, s.job_id or "-", str(s.attempts)) for s in statuses.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]  # fmt: skip
    counts: dict[str, int] = {}
    for s in statuses.values():
        key = s.state.split(" ")[0].lower()
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return "\n".join(lines) + f"\n{len(statuses)} experiments: {summary}\n"


def format_actions(actions: Sequence[Action]) -> str:
    lines = []
    for a in actions:
        job = f"job {a.job_id}" if a.job_id else ""
        after = f"after {a.dependency.split(':', 1)[1]}" if a.dependency else ""
        lines.append("  ".join(x for x in (a.exp.name.ljust(24), a.what, job, after) if x))
    return "\n".join(lines) + ("\n" if lines else "")
