"""The DVC operations a grid lives on, timed in a throw-away clone of this repository.

1. `dvc repro` of the embedded pipeline from nothing (fresh clone, empty cache);
2. a no-op `dvc repro` (everything up to date);
3. `kdlab grid queue` of a 240-experiment grid (4 datasets × 6 methods × 3 alphas × 3 seeds,
   plus 12 teachers and 12 pure baselines), then `dvc queue remove --queued`;
4. `dvc exp show` (the table) and `dvc exp show --json` with N finished experiments, cold (no
   DVC experiment cache) and warm;
5. DVC's floor for step 4: the same cold `dvc exp show` of N experiments of a one-stage
   pipeline (one script, three params, one metrics file), in the same run;
6. `kdlab check`, and `kdlab show` of the same N experiments (it reads refs/exps directly).

The experiments of step 4 are made the way `dvc exp run` leaves them, without training 300
models: one real experiment is run, and N - 1 more commits are written with `git fast-import`
from its tree, each with its own params.yaml (method, alpha, seed) and metrics, as children of
the baseline commit under refs/exps/. `dvc exp show` reads exactly these refs and files.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kdlab.errors import KdlabError
from kdlab.gitutil import git_output

log = logging.getLogger(__name__)

GRID_240 = {
    "datasets": ["cifar10", "cifar100", "svhn", "tinyimagenet"],
    "methods": ["logit", "fitnets", "at", "nst", "rkd", "ft"],
    "alphas": [0.25, 0.5, 0.9],
    "seeds": [0, 1, 2],
    "baseline": True,
}
METRICS_FILE = "metrics/student/metrics.json"

# The floor's repository: the least a DVC experiment can be, with the params and metrics file
# that `fast_import_experiments` varies.
FLOOR_FILES = {
    "dvc.yaml": (
        "stages:\n"
        "  train:\n"
        "    cmd: python train.py\n"
        "    deps: [train.py]\n"
        "    params: [seed, kd.method, kd.alpha]\n"
        "    metrics:\n"
        f"      - {METRICS_FILE}:\n"
        "          cache: false\n"
    ),
    "params.yaml": "seed: 0\nkd:\n  method: logit\n  alpha: 0.5\n",
    "train.py": (
        "import json, os\n"
        f"os.makedirs(os.path.dirname({METRICS_FILE!r}), exist_ok=True)\n"
        f"json.dump({{'test': {{'acc': 0.5}}}}, open({METRICS_FILE!r}, 'w'))\n"
    ),
}


def tool(name: str) -> str:
    """A console script of this environment (dvc, kdlab), else the one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def timed_run(cmd: list[str], cwd: Path, what: str) -> tuple[float, str]:
    """Run `cmd`, return (seconds, stdout); a failure is one error naming `what`."""
    # Stage commands run `python`: this environment's, as under `make repro`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise KdlabError(f"bench: {what} failed ({' '.join(cmd)}): {' | '.join(tail)}")
    log.info("%s: %.1f s", what, seconds)
    return seconds, proc.stdout


def make_clone(repo: Path, dest: Path) -> Path:
    """A clone of `repo` at HEAD with its own identity; uncommitted changes are not in it."""
    if git_output(repo, "status", "--porcelain", "--untracked-files=no"):
        log.warning("uncommitted changes are not benchmarked: the clone is of HEAD")
    subprocess.run(["git", "clone", "--quiet", str(repo.resolve()), str(dest)], check=True)
    set_identity(dest)
    return dest


def set_identity(repo: Path) -> None:
    for key, value in (("user.name", "kdlab bench"), ("user.email", "bench@kdlab.invalid")):
        git_output(repo, "config", key, value)


def make_floor_repo(dest: Path) -> Path:
    """A git + DVC repository of FLOOR_FILES, reproduced and committed."""
    dest.mkdir(parents=True)
    for name, text in FLOOR_FILES.items():
        (dest / name).write_text(text)
    git_output(dest, "init", "--quiet")
    set_identity(dest)
    timed_run([tool("dvc"), "init", "--quiet"], dest, "dvc init (floor)")
    timed_run([tool("dvc"), "repro"], dest, "dvc repro (floor)")
    git_output(dest, "add", "--all")
    git_output(dest, "commit", "--quiet", "-m", "floor: one stage")
    return dest


def commit_grid(clone: Path, grid: dict) -> None:
    """Set `grid:` in the clone's params.yaml and commit it (queueing needs a clean tree)."""
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["grid"] = grid
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    git_output(clone, "commit", "--quiet", "-am", "bench: the 240-experiment grid")


def vary_params(text: str, method: str, alpha: float, seed: int) -> str:
    """params.yaml text with kd.method, kd.alpha and seed replaced (comments kept)."""
    text = re.sub(r"(?m)^seed: .*$", f"seed: {seed}", text, count=1)
    text = re.sub(r"(?m)^  method: \S+", f"  method: {method}", text, count=1)
    return re.sub(r"(?m)^  alpha: \S+", f"  alpha: {alpha}", text, count=1)


def vary_metrics(text: str, rng: random.Random) -> str:
    metrics = json.loads(text)

    def jitter(node):
        if isinstance(node, dict):
            return {k: jitter(v) for k, v in node.items()}
        if isinstance(node, float):
            return round(node * (1 + rng.uniform(-0.05, 0.05)), 6)
        return node

    return json.dumps(jitter(metrics), indent=4) + "\n"


def template_changes(clone: Path, baseline: str, template: str) -> str:
    """fast-import file commands that turn the baseline's tree into the template's."""
    out = git_output(clone, "diff-tree", "-r", "--no-renames", baseline, template)
    commands = []
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        _old_mode, new_mode, _old_sha, new_sha, status = meta[1:].split()
        if status == "D":
            commands.append(f"D {path}\n")
        else:
            commands.append(f"M {new_mode} {new_sha} {path}\n")
    return "".join(commands)


def fast_import_experiments(clone: Path, template: str, baseline: str, count: int) -> None:
    """`count` experiment commits like `template` (one real experiment), children of `baseline`,
    each with its own method, alpha, seed and metrics."""
    params_text = git_output(clone, "show", f"{template}:params.yaml") + "\n"
    metrics_text = git_output(clone, "show", f"{template}:{METRICS_FILE}")
    lock_text = git_output(clone, "show", f"{template}:dvc.lock") + "\n"
    changes = template_changes(clone, baseline, template)
    rng = random.Random(0)
    methods, alphas = GRID_240["methods"], GRID_240["alphas"]
    chunks = []
    for i in range(count):
        name = f"bench-{i:04d}"
        params = vary_params(params_text, methods[i % 6], alphas[i // 6 % 3], i // 18)
        metrics = vary_metrics(metrics_text, rng)
        lock = lock_with_md5(lock_text, METRICS_FILE, metrics.encode())
        message = f"dvc: commit experiment {name}"
        chunks.append(
            f"commit refs/exps/{baseline[:2]}/{baseline[2:]}/{name}\n"
            f"committer kdlab bench <bench@kdlab.invalid> {1_700_000_000 + i} +0000\n"
            f"data {len(message.encode())}\n{message}\n"
            f"from {baseline}\n{changes}"
            f"M 100644 inline params.yaml\ndata {len(params.encode())}\n{params}\n"
            f"M 100644 inline {METRICS_FILE}\ndata {len(metrics.encode())}\n{metrics}\n"
            f"M 100644 inline dvc.lock\ndata {len(lock.encode())}\n{lock}\n"
        )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=clone,
                   input="".join(chunks).encode(), check=True)  # fmt: skip


def lock_with_md5(lock_text: str, path: str, data: bytes) -> str:
    """dvc.lock with `path`'s md5 and size those of `data`, as DVC would have recorded them
    (kdlab show checks every metrics file against its dvc.lock)."""
    import hashlib

    pattern = re.compile(
        rf"(- path: {re.escape(path)}\n(\s+)hash: md5\n\s+md5: )\w+(\n\s+size: )\d+"
    )
    return pattern.sub(lambda m: f"{m.group(1)}{hashlib.md5(data).hexdigest()}{m.group(3)}"
                       f"{len(data)}", lock_text)  # fmt: skip


def synthetic_experiments(repo: Path, count: int) -> None:
    """`count` finished experiments of `repo`'s HEAD: one `dvc exp run`, then `count - 1` copies
    written by `fast_import_experiments`."""
    baseline = git_output(repo, "rev-parse", "HEAD")
    timed_run([tool("dvc"), "exp", "run", "-n", "bench-template", "-S", "kd.alpha=0.9"], repo,
              "dvc exp run (the template experiment)")  # fmt: skip
    template = git_output(repo, "rev-parse", "refs/exps/" + baseline[:2] + "/" + baseline[2:] +
                          "/bench-template")  # fmt: skip
    fast_import_experiments(repo, template, baseline, count - 1)


def run_benchmark(repo: Path, experiments: int = 300) -> dict:
    """Every DVC measurement, in a temporary clone of `repo`; a JSON-ready dict (seconds)."""
    dvc, kdlab = tool("dvc"), tool("kdlab")
    results: dict[str, float | int] = {"experiments": experiments}
    with tempfile.TemporaryDirectory(prefix="kdlab-bench-") as tmp:
        clone = make_clone(repo, Path(tmp) / "repo")
        results["repro_s"], _ = timed_run([dvc, "repro"], clone, "dvc repro (empty cache)")
        results["repro_noop_s"], _ = timed_run([dvc, "repro"], clone, "dvc repro (no-op)")
        results["check_s"], _ = timed_run([kdlab, "check"], clone, "kdlab check")
        commit_grid(clone, GRID_240)
        results["grid_queue_s"], out = timed_run([kdlab, "grid", "queue"], clone,
                                                 "kdlab grid queue (240)")  # fmt: skip
        results["queued"] = int(re.search(r"queued (\d+)", out).group(1))
        timed_run([dvc, "queue", "remove", "--queued"], clone, "dvc queue remove")
        synthetic_experiments(clone, experiments)
        show = [dvc, "exp", "show", "--no-pager"]
        results["exp_show_cold_s"], _ = timed_run(show, clone, "dvc exp show (cold)")
        results["exp_show_warm_s"], _ = timed_run(show, clone, "dvc exp show (warm)")
        results["exp_show_json_s"], text = timed_run([*show, "--json"], clone,
                                                     "dvc exp show --json")  # fmt: skip
        results["listed"] = count_experiments(text)
        results["show_s"], text = timed_run([kdlab, "show", "--json"], clone, "kdlab show")
        results["show_listed"] = sum(1 for row in json.loads(text) if row["state"] == "done")
        floor = make_floor_repo(Path(tmp) / "floor")
        synthetic_experiments(floor, experiments)
        what = "dvc exp show (the one-stage floor, cold)"
        results["floor_exp_show_cold_s"], _ = timed_run(show, floor, what)
    return results


def count_experiments(exp_show_json: str) -> int:
    """Experiments (not baselines) in `dvc exp show --json` output."""
    data = json.loads(exp_show_json)
    return sum(len(entry.get("experiments") or []) for entry in data)


def format_table(results: dict) -> str:
    n = results["listed"]
    rows = [
        ("`dvc repro`, embedded pipeline, empty cache", results["repro_s"]),
        ("`dvc repro`, no-op", results["repro_noop_s"]),
        ("`kdlab check` (validates params.yaml and every grid point)", results["check_s"]),
        (f"`kdlab grid queue`, {results['queued']} experiments", results["grid_queue_s"]),
        (f"`dvc exp show`, {n} experiments, cold", results["exp_show_cold_s"]),
        (f"`dvc exp show`, {n} experiments, warm", results["exp_show_warm_s"]),
        (f"`dvc exp show --json`, {n} experiments", results["exp_show_json_s"]),
        (
            f"`dvc exp show`, {n} one-stage experiments (floor), cold",
            results["floor_exp_show_cold_s"],
        ),
        (f"`kdlab show`, {results['show_listed']} experiments, first run", results["show_s"]),
    ]
    lines = ["| operation | seconds |", "|---|---:|"]
    lines += [f"| {what} | {seconds:.2f} |" for what, seconds in rows]
    per_experiment = (results["exp_show_cold_s"] - results["exp_show_warm_s"]) / n
    floor = results["floor_exp_show_cold_s"] / results["exp_show_cold_s"]
    lines += ["", f"First `dvc exp show`: {per_experiment * 1000:.0f} ms per new experiment; "
              f"the one-stage floor takes {floor:.2f} of the pipeline's time."]  # fmt: skip
    return "\n".join(lines) + "\n"
