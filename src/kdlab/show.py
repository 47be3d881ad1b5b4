"""`kdlab show`: every experiment of the grid as a researcher reads it, from DVC's own data.

One row per experiment: name, state, dataset, teacher -> student, method, alpha, seed, the
teacher's and the student's test accuracy, the student's difference to its paired pure baseline
(same seed and every non-KD param equal), CKA at the embedding and top-1 agreement with the
teacher. Read where DVC keeps them, without DVC's per-commit pipeline index (what makes a cold
`dvc exp show` of 300 experiments take 20 s):

- finished: the experiment commits under refs/exps/<baseline>/, their params.yaml and metrics
  files, all read through one `git cat-file --batch`;
- the local queue: queued entries in the refs/exps/celery/stash reflog, failed ones in
  refs/exps/celery/failed, running ones in .dvc/tmp/exps/run/<rev>/<rev>.run (DVC's executor
  info) with their log beside it (what `dvc queue logs` prints);
- SLURM: kdlab's ledger (.kdlab/slurm/ledger.json), squeue when a cluster answers, the job log;
- the grid of params.yaml: its experiments not yet queued anywhere.

A running experiment's log says how far it is: "teacher epoch 3/20", or that it waits for its
teacher (another experiment is training the same teacher, see kdlab.training.shared_teacher).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kdlab.errors import ConfigError, KdlabError
from kdlab.flat import flatten
from kdlab.gitutil import git_output

STUDENT_METRICS = "metrics/student/metrics.json"
TEACHER_METRICS = "metrics/teacher/metrics.json"
ANALYSIS_METRICS = "metrics/analysis.json"
# The reflog message of a queued experiment (DVC's ExpStashEntry): dvc-exp:<HEAD when queued>:
# <baseline rev>:<name>. The stash commit itself (its params.yaml, its run directory's name) is
# the reflog entry's commit.
STASH_MESSAGE = re.compile(
    r"dvc-exp:(?P<head>[0-9a-f]{40}):(?P<baseline>[0-9a-f]{40}):(?P<name>.*)$"
)
# DVC's TaskStatus (dvc/repo/experiments/executor/base.py) as kdlab names it.
TASK_STATES = {0: "queued", 1: "running", 2: "running", 3: "done", 4: "failed", 5: "cancelled",
               6: "done"}  # fmt: skip
EPOCH_LINE = re.compile(r"\b(teacher|student|paraphraser) epoch (\d+)/(\d+)")
STAGE_LINE = re.compile(r"^Running stage '(\w+)'")  # DVC's, before each stage it runs
WAITING_LINE = "another experiment is training this exact run; waiting for it"
# Params that never tell a KD run from its baseline's pairing key.
NOT_PAIRED = ("kd.", "grid.", "slurm.")


@dataclasses.dataclass
class Row:
    name: str
    state: str
    dataset: str = ""
    pair: str = ""
    method: str = ""
    alpha: float | None = None
    seed: int | None = None
    teacher_acc: float | None = None
    student_acc: float | None = None
    delta: float | None = None
    cka: float | None = None
    agreement: float | None = None
    log: str = ""
    baseline: str = ""
    """The commit the experiment was run from (DVC's baseline)."""
    key: tuple = ()
    """The pairing key: the baseline commit and every non-KD param."""


# (attribute, header, formatter) in table order
COLUMNS: list[tuple[str, str, Any]] = [
    ("name", "experiment", str),
    ("state", "state", str),
    ("dataset", "data", str),
    ("pair", "teacher→student", str),
    ("method", "method", str),
    ("alpha", "α", lambda v: f"{v:g}"),
    ("seed", "seed", str),
    ("teacher_acc", "T acc", lambda v: f"{v:.4f}"),
    ("student_acc", "S acc", lambda v: f"{v:.4f}"),
    ("delta", "Δ base", lambda v: f"{v:+.4f}"),
    ("cka", "CKA emb", lambda v: f"{v:.3f}"),
    ("agreement", "agree", lambda v: f"{v:.3f}"),
]
SORT_KEYS = {attr for attr, _, _ in COLUMNS}


def read_blobs(repo: Path, specs: Sequence[str]) -> dict[str, bytes | None]:
    """`<rev>:<path>` -> the file's bytes (None where it is absent), in one git process."""
    if not specs:
        return {}
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, capture_output=True,
                          input="".join(f"{s}\n" for s in specs).encode(), check=False)  # fmt: skip
    if proc.returncode != 0:
        raise KdlabError(f"git cat-file failed in {repo}: {proc.stderr.decode().strip()}")
    out, pos, blobs = proc.stdout, 0, {}
    for spec in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if header[-1] == b"missing" or len(header) != 3:
            blobs[spec] = None
            continue
        size = int(header[2])
        blobs[spec] = out[pos : pos + size]
        pos += size + 1
    return blobs


def _json(blob: bytes | None) -> dict:
    try:
        return json.loads(blob) if blob else {}
    except ValueError:
        return {}


def _yaml(blob: bytes | None) -> dict:
    # the columns shown (names, alpha, seed) parse the same as with kdlab.schema.load_yaml;
    # not params -> {} (`kdlab check` says what is wrong)
    from kdlab.lockcheck import load_mapping

    return load_mapping(blob)


def _get(tree: dict, *path: str) -> Any:
    for part in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def trains_one_model(name: str, params: dict) -> bool:
    """A grid's teacher experiment, or a study of one model (`student.arch: none`): the
    teacher stage's network is all it trains, its metrics are the teacher's."""
    from kdlab.config import is_one_model
    from kdlab.grid import is_teacher_experiment

    return is_teacher_experiment(name) or is_one_model(params)


def _label(params: dict, role: str) -> str:
    """`<role>.arch`, with its `<role>.size` where one is set (kdlab.architectures.arch_label)."""
    from kdlab.architectures import arch_label

    size = _get(params, role, "size")
    return arch_label(str(_get(params, role, "arch")), size if isinstance(size, dict) else None)


def describe(name: str, state: str, params: dict, baseline: str) -> Row:
    """A row's identity columns from the experiment's params.yaml."""
    from kdlab.grid import is_teacher_experiment

    teacher = trains_one_model(name, params)
    method = "" if teacher else str(_get(params, "kd", "method") or "")
    flat = flatten(params)
    alpha = _get(params, "kd", "alpha")
    return Row(
        name=name, state=state, dataset=str(_get(params, "data", "name") or ""),
        pair=(_label(params, "teacher") if teacher else
              f"{_label(params, 'teacher')}→{_label(params, 'student')}"),
        method=("teacher" if is_teacher_experiment(name) else "one model") if teacher else method,
        alpha=float(alpha) if method not in ("", "none") and alpha is not None else None,
        seed=_get(params, "seed"), baseline=baseline,
        key=(baseline, *sorted((k, repr(v)) for k, v in flat.items()
                               if not k.startswith(NOT_PAIRED))),
    )  # fmt: skip


def experiment_refs(repo: Path, baselines: set[str] | None) -> list[tuple[str, str, str]]:
    """(name, commit, baseline) of every experiment ref whose baseline is in `baselines`
    (None: all)."""
    text = git_output(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/")
    found = []
    for line in text.splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")
        if len(parts) != 5 or len(parts[2]) != 2:  # refs/exps/<ab>/<cdef...>/<name>
            continue
        if baselines is None or parts[2] + parts[3] in baselines:
            found.append((parts[4], sha, parts[2] + parts[3]))
    return found


def finished_rows(repo: Path, refs: Sequence[tuple[str, str, str]]) -> list[Row]:
    from kdlab.lockcheck import corrupt_files

    metrics = (STUDENT_METRICS, TEACHER_METRICS, ANALYSIS_METRICS)
    files = ("params.yaml", "dvc.lock", *metrics)
    blobs = read_blobs(repo, [f"{sha}:{f}" for _, sha, _ in refs for f in files])
    rows = []
    for name, sha, baseline in refs:
        params, lock, student, teacher, analysis = (blobs[f"{sha}:{f}"] for f in files)
        corrupt = corrupt_files({f: blobs[f"{sha}:{f}"] for f in metrics}, lock)
        if corrupt:  # a number that is not what the run wrote is never shown
            row = describe(name, f"corrupt ({corrupt[0]} ≠ dvc.lock)", _yaml(params), baseline)
            rows.append(row)
            continue
        single = trains_one_model(name, _yaml(params))
        needed = TEACHER_METRICS if single else STUDENT_METRICS
        if blobs[f"{sha}:{needed}"] is None:  # a commit without its results is not done
            rows.append(describe(name, f"incomplete (no {needed})", _yaml(params), baseline))
            continue
        row = describe(name, "done", _yaml(params), baseline)
        row.teacher_acc = _get(_json(teacher), "test", "acc")
        if not single:
            analysis = _json(analysis)
            row.student_acc = _get(_json(student), "test", "acc")
            row.cka = analysis.get("cka/embedding")
            row.agreement = analysis.get("fidelity/top1_agreement")
        rows.append(row)
    return rows


def stash_entries(repo: Path, ref: str) -> list[dict[str, str]]:
    """The entries of one of DVC's experiment stashes (a reflog), oldest first: the stash
    commit (`rev`), the baseline and the experiment's name."""
    proc = subprocess.run(["git", "log", "-g", "--format=%H %gs", ref], cwd=repo,
                          capture_output=True, text=True, check=False)  # fmt: skip
    entries = []
    for line in reversed(proc.stdout.splitlines() if proc.returncode == 0 else []):
        rev, _, message = line.partition(" ")
        match = STASH_MESSAGE.search(message)
        if match:
            entries.append({"rev": rev, **match.groupdict()})
    return entries


def _alive(pid_file: Path) -> bool | None:
    """Whether the process a DVC task's pid file names is alive; None while the file is not
    written yet (DVC marks a task running a moment before its process manager writes it)."""
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        os.kill(int(text.split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def progress(log: Path) -> str | None:
    """How far a running experiment is, from its log: 'student epoch 3/20', 'waiting for
    teacher', the stage DVC started last when it trains nothing ('extract', 'analyze'), or None
    when the log says none of these yet."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - 65536))
            tail = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        epoch = EPOCH_LINE.search(line)
        if epoch:
            role, done, total = epoch.groups()
            return f"{role} epoch {done}/{total}"
        if WAITING_LINE in line:
            return "waiting for teacher"
        stage = STAGE_LINE.match(line)
        if stage:
            return stage.group(1)
    return None


def queue_worker_pids(repo: Path) -> list[int]:
    """The `dvc exp queue-worker` processes of this repository, from the process table (DVC's
    dvc-exp-worker-N.json names the process that spawned the worker, not the worker)."""
    root = repo.resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
            if b"queue-worker" not in words or b"exp" not in words:
                continue
            if Path(os.readlink(proc / "cwd")).resolve() == root:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def live_workers(repo: Path) -> int:
    return len(queue_worker_pids(repo))


def task_state(repo: Path, info: dict, info_file: Path, workers: int) -> str:
    """A DVC queue task's state as it truly is. `done` is never said here: a finished
    experiment is its collected commit (finished_rows). A task the executor finished whose
    result was not collected (its worker was killed) is `dead (worker vanished)`, as is a running
    one whose process is gone."""
    state = TASK_STATES.get(info.get("status"), "unknown")
    log = info_file.with_suffix(".out")
    orphaned = info.get("location") == "dvc-task" and not workers  # a celery task, no worker
    if state == "running":
        if _alive(info_file.with_suffix(".pid")) is False:
            return "dead (worker vanished)" if orphaned else "dead"
        return f"running ({progress(log) or 'starting'})"
    if state == "done":
        ref = info.get("result_ref")
        if ref and git_output(repo, "for-each-ref", "--format=%(objectname)", ref).strip():
            return "collected"  # finished_rows has it, with its metrics
        return "dead (worker vanished)" if orphaned else "collecting"
    return state


def local_queue_rows(repo: Path, baselines: set[str] | None) -> list[Row]:
    """Queued, running and failed experiments of the local DVC queue."""
    dvc_dir = repo / ".dvc" / "tmp" / "exps"
    workers = live_workers(repo)
    entries: dict[str, tuple[str, str, str, str]] = {}  # rev -> (name, state, log, baseline)
    for entry in stash_entries(repo, "refs/exps/celery/stash"):
        if baselines is None or entry["baseline"] in baselines:
            entries[entry["rev"]] = (entry["name"], "queued", "", entry["baseline"])
    for info_file in sorted(dvc_dir.glob("run/*/*.run")):
        info = _json(info_file.read_bytes())
        if baselines is not None and info.get("baseline_rev") not in baselines:
            continue
        rev, log = info_file.stem, info_file.with_suffix(".out")
        state = task_state(repo, info, info_file, workers)
        entries[rev] = (info.get("name") or f"exp-{rev[:7]}", state, str(log),
                        info.get("baseline_rev", ""))  # fmt: skip
    for entry in stash_entries(repo, "refs/exps/celery/failed"):
        if baselines is None or entry["baseline"] in baselines:
            log = dvc_dir / "run" / entry["rev"] / f"{entry['rev']}.out"
            entries[entry["rev"]] = (entry["name"], "failed", str(log) if log.exists() else "",
                                     entry["baseline"])  # fmt: skip
    blobs = read_blobs(repo, [f"{rev}:params.yaml" for rev in entries])
    rows = []
    for rev, (name, state, log, baseline) in entries.items():
        row = describe(name, state, _yaml(blobs.get(f"{rev}:params.yaml")), baseline)
        row.log = log
        rows.append(row)
    return rows


def slurm_rows(repo: Path, head: str) -> list[Row]:
    """Experiments kdlab submitted to SLURM on this commit, with squeue's word when it answers."""
    from kdlab.slurm import cluster
    from kdlab.slurm.ledger import Ledger
    from kdlab.slurm.submit import STATE_DIR

    ledger_path = repo / STATE_DIR / "ledger.json"
    if not ledger_path.is_file():
        return []

    records = [r for r in Ledger(ledger_path).records.values() if r.commit == head]
    if not records:
        return []
    try:
        live = {job_id: state for job_id, (_, state, _) in cluster.live_jobs().items()}
    except KdlabError:
        live = None  # no cluster from here: the ledger is all there is
    params = _yaml(read_blobs(repo, [f"{head}:params.yaml"])[f"{head}:params.yaml"])
    rows = []
    for record in records:
        if live is None:
            state = f"submitted (job {record.job_id})"
        elif record.job_id in live:
            state = live[record.job_id].lower()
            if state == "running":
                state = f"running ({progress(Path(record.log)) or 'starting'})"
        else:
            state = f"dead (job {record.job_id})"
        row = describe(record.name, state, params, head)
        row.log = record.log
        rows.append(row)
    return rows


def planned_rows(repo: Path, params_path: Path, head: str) -> list[Row]:
    """The grid of params.yaml, each experiment with its own params. Not validated here (that
    needs the KD method registry, hence torch): `kdlab check` names any problem."""
    from kdlab.config import is_one_model
    from kdlab.grid import GridConfig, plan_grid

    raw = _yaml(params_path.read_bytes()) if params_path.is_file() else {}
    if not isinstance(raw.get("grid"), dict):
        return []
    fields = {f.name for f in dataclasses.fields(GridConfig)}
    given = {k: tuple(v) if isinstance(v, list) else v
             for k, v in raw["grid"].items() if k in fields}  # fmt: skip
    try:
        plan = plan_grid(GridConfig(**given), is_one_model(raw))
    except (ConfigError, TypeError, ValueError, AttributeError, KeyError):
        return []
    from kdlab.validate import with_overrides

    return [describe(exp.name, "not queued", with_overrides(raw, exp.overrides), head)
            for exp in plan]  # fmt: skip


def pair_with_baselines(rows: Iterable[Row]) -> None:
    """Δ base: a finished KD student's accuracy minus that of the finished pure student with
    the same non-KD params (seed included)."""
    rows = list(rows)
    baselines = {
        r.key: r.student_acc
        for r in rows
        if r.method == "none" and r.state == "done" and r.student_acc is not None
    }
    for row in rows:
        base = baselines.get(row.key)
        if row.method not in ("", "none", "teacher") and row.student_acc is not None and base:
            row.delta = row.student_acc - base


def collect(repo: Path, params_path: Path, all_commits: bool = False) -> list[Row]:
    """Every experiment once per commit: finished beats running/queued/failed beats SLURM
    beats planned."""
    head = git_output(repo, "rev-parse", "HEAD")
    baselines = None if all_commits else {head}
    by_name: dict[tuple[str, str], Row] = {}
    sources = [finished_rows(repo, experiment_refs(repo, baselines)),
               local_queue_rows(repo, baselines), slurm_rows(repo, head)]  # fmt: skip
    if not all_commits:
        sources.append(planned_rows(repo, params_path, head))
    for rows in sources:
        for row in rows:
            by_name.setdefault((row.baseline, row.name), row)
    rows = list(by_name.values())
    pair_with_baselines(rows)
    return rows


def select(rows: list[Row], pattern: str | None) -> list[Row]:
    if not pattern:
        return rows
    return [r for r in rows if fnmatch.fnmatchcase(r.name, pattern)]


def sort_rows(rows: list[Row], attr: str | None, descending: bool = False) -> list[Row]:
    """Teachers first, then by name; or by a column, blanks last."""
    if not attr:
        return sorted(rows, key=lambda r: (r.method != "teacher", r.name), reverse=descending)
    if attr not in SORT_KEYS:
        raise ConfigError(f"--sort must be one of {', '.join(sorted(SORT_KEYS))}; "
                          f"got {attr!r}")  # fmt: skip
    present = [r for r in rows if getattr(r, attr) is not None]
    blank = [r for r in rows if getattr(r, attr) is None]
    return sorted(present, key=lambda r: getattr(r, attr), reverse=descending) + blank


def _cells(row: Row) -> list[str]:
    return ["" if getattr(row, attr) is None else fmt(getattr(row, attr))
            for attr, _, fmt in COLUMNS]  # fmt: skip


def _shorten(text: str, width: int) -> str:
    """Middle ellipsis: an experiment name keeps its start (dataset, method) and its end (seed)."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]


def table(rows: Sequence[Row], width: int = 160) -> str:
    """Aligned columns within `width` characters (names shortened in the middle if needed),
    and a count per state."""
    headers = [h for _, h, _ in COLUMNS]
    cells = [_cells(r) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    for column, floor in ((0, 20), (1, 12)):  # the name first, then the state
        if over > 0:
            cut = min(over, widths[column] - floor)
            widths[column] -= max(cut, 0)
            over -= max(cut, 0)
    right = {
        i
        for i, (attr, _, _) in enumerate(COLUMNS)
        if attr in {"alpha", "seed", "teacher_acc", "student_acc", "delta", "cka", "agreement"}
    }

    def line(values: list[str]) -> str:
        out = []
        for i, value in enumerate(values):
            value = _shorten(value, widths[i])
            out.append(value.rjust(widths[i]) if i in right else value.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(headers)] + [line(c) for c in cells]
    counts: dict[str, int] = {}
    for row in rows:
        word = row.state.split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    failed = [r for r in rows if r.state.startswith(("failed", "dead")) and r.log]
    logs = [f"{r.name}: {r.state}, log {r.log}" for r in failed]
    if any(r.state.startswith("dead (worker vanished)") for r in rows):
        logs.append("their queue worker was killed, so DVC will never collect them: "
                    "`kdlab grid requeue --dead` queues them again (finished stages come back "
                    "from DVC's run-cache), then `dvc queue start`")  # fmt: skip
    return (
        "\n".join(
            [
                *lines,
                f"{len(rows)} experiments: {summary}"
                if rows
                else "no experiments: run `kdlab grid queue` or `dvc exp run`",
                *logs,
            ]
        )
        + "\n"
    )


def markdown(rows: Sequence[Row]) -> str:
    headers = [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def records(rows: Sequence[Row]) -> list[dict]:
    return [{attr: getattr(r, attr) for attr, _, _ in COLUMNS} | {"log": r.log,
                                                                   "commit": r.baseline}
            for r in rows]  # fmt: skip


def as_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*(a for a, _, _ in COLUMNS), "log", "commit"],
                            lineterminator="\n")  # fmt: skip
    writer.writeheader()
    writer.writerows(records(rows))
    return out.getvalue()


def as_json(rows: Sequence[Row]) -> str:
    return json.dumps(records(rows), indent=2) + "\n"
