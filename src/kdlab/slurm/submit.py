"""`kdlab slurm submit` and `kdlab slurm status`: one SLURM job per experiment, or per pack of
`slurm.experiments_per_gpu` experiments that share a job's GPU.

Each experiment clones the repository at the submitted commit into its own workspace on shared
scratch, uses the repository's DVC cache (so the run-cache restores teachers and data), runs
`dvc exp run` with the experiment's overrides, and ends with `dvc exp push` into this
repository, where `dvc exp show` then lists it. Students wait for their teacher's job
(`afterok`); a failed teacher cancels them instead of leaving them waiting forever. Packs hold
teachers with teachers and students with students (grouped by teacher), so a pack waits only
for the teacher jobs of its own members.

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
COMMENT_PREFIX = "kdlab:"
"""A job's --comment lists its experiments (a pack's job name shows only the first)."""
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

    def log_path(self, exp: Experiment, job_id: str) -> Path:
        """One log per experiment and job (a requeued job keeps its id and appends to it)."""
        return self.state_dir / "logs" / f"{exp.name}-{job_id}.out"

    def job_log_path(self, pack: Sequence[Experiment]) -> Path:
        """The job's own log (sbatch --output): start, stop signals, requeues, exit statuses."""
        return self.state_dir / "logs" / f"{job_name(pack)}-%j.out"

    def script_path(self, pack: Sequence[Experiment]) -> Path:
        return self.state_dir / "scripts" / f"{pack[0].name}.sbatch"


def job_name(pack: Sequence[Experiment]) -> str:
    more = f"+{len(pack) - 1}" if len(pack) > 1 else ""
    return f"{JOB_PREFIX}{pack[0].name}{more}"


def make_packs(experiments: Sequence[Experiment], per_job: int) -> list[list[Experiment]]:
    """Experiments in jobs of at most `per_job`: teachers (no dependency) first, then the
    others grouped by teacher, in plan order."""
    independent = [e for e in experiments if not e.teacher]
    teacher_rank = {name: i for i, name in enumerate(dict.fromkeys(
        e.teacher for e in experiments if e.teacher))}  # fmt: skip
    dependent = sorted((e for e in experiments if e.teacher), key=lambda e: teacher_rank[e.teacher])
    packs = []
    for group in (independent, dependent):
        packs += [group[i : i + per_job] for i in range(0, len(group), per_job)]
    return packs


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


def render_script(ctx: Context, pack: Sequence[Experiment]) -> str:
    """The sbatch script of one job running the experiments of `pack`, from slurm/'s template."""
    venv_bin = Path(sys.executable).parent
    q = shlex.quote
    starts = [shlex.join(["start_experiment", exp.name, str(ctx.workspace(exp)), *exp.dvc_args()])
              for exp in pack]  # fmt: skip
    values = {
        "job_name": job_name(pack),
        "comment": COMMENT_PREFIX + ",".join(exp.name for exp in pack),
        "log_path": str(ctx.job_log_path(pack)),
        "log_dir": q(str(ctx.state_dir / "logs")),
        "signal_seconds": str(ctx.config.signal_seconds),
        "sbatch_lines": "\n".join(f"#SBATCH {opt}" for opt in ctx.config.sbatch_options()),
        "repo": q(str(ctx.repo)),
        "commit": ctx.commit,
        "cache_dir": q(str(ctx.cache_dir)),
        "venv_bin": q(str(venv_bin)),
        "setup": ctx.config.setup,
        "fetch": "dvc fetch --run-cache || true" if ctx.has_remote else "",
        "push_args": "--run-cache" if ctx.has_remote else "--no-cache",
        "experiments": "\n".join(starts),
    }
    template = (ctx.repo / ctx.config.template).read_text()

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"slurm.template uses {{{{{key}}}}}; known: {', '.join(values)}")
        return values[key]

    return _PLACEHOLDER.sub(fill, template)


def names_of_job(name: str, comment: str) -> list[str]:
    """The experiments a kdlab job runs, from its comment (or its name, for older jobs)."""
    if comment.startswith(COMMENT_PREFIX):
        return comment[len(COMMENT_PREFIX) :].split(",")
    if name.startswith(JOB_PREFIX):
        return [name[len(JOB_PREFIX) :]]
    return []


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
    ctx: Context, ledger: Ledger, experiments: Sequence[Experiment], offline: bool = False
) -> dict[str, ExpStatus]:
    """Finished (its ref exists on the commit), live (squeue), dead or new, per experiment.
    `offline` (a dry run): with no cluster reachable, no job is taken to be live."""
    finished = finished_experiments(ctx.repo, ctx.commit)
    try:
        live = cluster.live_jobs()
    except cluster.NoClusterError as error:
        if not offline:
            raise
        print(f"{error}: the plan assumes no job is live", file=sys.stderr)
        live = None
    live_by_name = {exp_name: (job_id, state)
                    for job_id, (name, state, comment) in (live or {}).items()
                    for exp_name in names_of_job(name, comment)}  # fmt: skip
    records = {exp.name: ledger.get(exp.name) for exp in experiments}
    ids = list(dict.fromkeys(r.job_id for r in records.values()
                             if r is not None and r.commit == ctx.commit))  # fmt: skip
    if live is None:
        states = dict.fromkeys(ids, "unknown (no cluster)")
    else:
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
        elif job_id is not None and live is None:
            state = states[job_id]  # submitted once; whether it lives cannot be known here
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
    """Submit what is new or dead, teachers first, `experiments_per_gpu` to a job; returns the
    actions (one per experiment, in plan order) and the rendered scripts by job name."""
    actions: dict[str, Action] = {}
    scripts = {}
    with locked_ledger(ctx.state_dir / "ledger.json") as ledger:
        statuses = experiment_statuses(ctx, ledger, experiments, offline=dry_run)
        job_of = {name: s.job_id for name, s in statuses.items() if s.live}
        pending = []
        for exp in experiments:
            status = statuses[exp.name]
            if status.needs_submit:
                pending.append(exp)
            else:
                actions[exp.name] = Action(exp, f"skipped ({status.state})", status.job_id, None)
        for pack in make_packs(pending, ctx.config.experiments_per_gpu):
            teacher_jobs = dict.fromkeys(job_of[e.teacher] for e in pack if job_of.get(e.teacher))
            dependency = "afterok:" + ":".join(teacher_jobs) if teacher_jobs else None
            script = render_script(ctx, pack)
            scripts[job_name(pack)] = script
            job_id = None if dry_run else _submit_job(ctx, ledger, pack, script, dependency,
                                                      statuses)  # fmt: skip
            for exp in pack:
                job_of[exp.name] = job_id
                what = (
                    "would submit"
                    if dry_run
                    else "resubmitted"
                    if statuses[exp.name].state != "new"
                    else "submitted"
                )
                actions[exp.name] = Action(exp, what, job_id, dependency)
    return [actions[exp.name] for exp in experiments], scripts


def _submit_job(
    ctx: Context, ledger: Ledger, pack: Sequence[Experiment], script: str,
    dependency: str | None, statuses: dict[str, ExpStatus],
) -> str:  # fmt: skip
    path = ctx.script_path(pack)
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx.job_log_path(pack).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    job_id = cluster.sbatch(str(path), dependency)
    now = dt.datetime.now().isoformat(timespec="seconds")
    for exp in pack:
        previous = ledger.get(exp.name)
        history = previous.job_ids if previous is not None and previous.commit == ctx.commit else []
        ledger.put(JobRecord(
            name=exp.name, job_id=job_id, commit=ctx.commit,
            attempts=statuses[exp.name].attempts + 1, workspace=str(ctx.workspace(exp)),
            log=str(ctx.log_path(exp, job_id)), submitted=now, job_ids=[*history, job_id],
        ))  # fmt: skip
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
