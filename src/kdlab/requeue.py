"""`kdlab grid requeue --dead`: a queued experiment whose queue worker was killed is never
collected by DVC (its `exec-run` may even finish: nothing takes its result), and DVC's queue
shows it running forever. This finds such tasks (kdlab.show.task_state: the worker's process is
gone), clears DVC's record of each (`dvc queue kill` marks it failed, `remove` drops it), removes
its executor directory, and queues it again with the params it was queued with. The requeued
run's finished stages come back from DVC's run-cache instead of running again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class DeadTask:
    """A queue task whose worker vanished: never collected, never to be."""

    rev: str
    name: str
    baseline: str
    run_dir: Path
    executor_dir: Path | None


def dead_tasks(repo_root: Path) -> list[DeadTask]:
    from kdlab import show

    workers = show.live_workers(repo_root)
    found = []
    for info_file in sorted((repo_root / ".dvc/tmp/exps/run").glob("*/*.run")):
        info = show._json(info_file.read_bytes())
        if not show.task_state(repo_root, info, info_file, workers).startswith("dead"):
            continue
        root_dir = info.get("root_dir")
        executor = Path(root_dir) if root_dir else None
        found.append(DeadTask(info_file.stem, info.get("name") or f"exp-{info_file.stem[:7]}",
                              info.get("baseline_rev", ""), info_file.parent,
                              executor))  # fmt: skip
    return found


def requeue_overrides(stash_params: dict, head_params: dict) -> list[str]:
    """`-S key=value` for each param the dead task's commit has and HEAD's params.yaml has
    otherwise (values as JSON, which DVC's override grammar reads as the same YAML values)."""
    from kdlab.flat import flatten

    head = flatten(head_params)
    return [f"{key}={json.dumps(value)}" for key, value in flatten(stash_params).items()
            if key not in head or head[key] != value]  # fmt: skip


def requeue_dead(repo_root: Path, dry_run: bool = False) -> list[tuple[str, str]]:
    """Queue again each task whose worker vanished, with the params it was queued with; clear
    DVC's record of the dead one and its executor directory. Returns (name, what was done)."""
    import shutil

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from kdlab.gitutil import git_output
    from kdlab.schema import load_yaml
    from kdlab.workspace import held

    head = git_output(repo_root, "rev-parse", "HEAD")
    head_params = load_yaml(git_output(repo_root, "show", f"{head}:params.yaml")) or {}
    done = []
    with held(repo_root, "queue", "kdlab grid requeue --dead"):
        repo = Repo(str(repo_root))
        try:
            for task in dead_tasks(repo_root):
                if task.baseline != head:
                    done.append(
                        (
                            task.name,
                            f"skipped: queued on {task.baseline[:7]}, HEAD is "
                            f"{head[:7]} (check that commit out to requeue it)",
                        )
                    )
                    continue
                params = load_yaml(git_output(repo_root, "show", f"{task.rev}:params.yaml"))
                overrides = requeue_overrides(params or {}, head_params)
                command = shlex.join(["dvc", "exp", "run", "--queue", "-n", task.name,
                                      *(a for o in overrides for a in ("-S", o))])  # fmt: skip
                if dry_run:
                    done.append((task.name, f"would requeue: {command}"))
                    continue
                for clear in (repo.experiments.celery_queue.kill,
                              repo.experiments.celery_queue.remove):  # fmt: skip
                    # DVC marks a task whose process is gone failed, then drops it
                    with contextlib.suppress(DvcException):
                        clear([task.rev])
                shutil.rmtree(task.run_dir, ignore_errors=True)
                exps_tmp = (repo_root / ".dvc/tmp/exps").resolve()
                if task.executor_dir and task.executor_dir.resolve().parent == exps_tmp:
                    shutil.rmtree(task.executor_dir, ignore_errors=True)
                repo.experiments.run(params=overrides, queue=True, name=task.name)
                done.append((task.name, f"requeued: {command}"))
        finally:
            repo.close()
    return done
