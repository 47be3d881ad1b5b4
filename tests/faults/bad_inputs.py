"""The bad-input battery on a real DVC clone, as a newcomer or a fault injector would try it.

    .venv/bin/python tests/faults/bad_inputs.py --out docs/reliability

Makes a throw-away clone of this working tree (tiny digits configs), runs `dvc repro` once and
commits the results, then tries each bad input by the route a user takes (`dvc exp run -S`, an
edit of params.yaml + `dvc repro`, or a machine fault + `dvc repro`), and after each compares
the sha256 of every file in the workspace (outputs, metrics, dvc.lock; not .git or DVC's cache)
with the good state. Writes `bad-inputs.json` (every case: route, command, exit status, the
kdlab line, the files that changed) and `bad-inputs.md` (the counts), then removes the clone.

An outcome is `refused` when the run exits non-zero with one `kdlab[ <stage>]: error:` line, no
traceback, and no file changed apart from params.yaml (the user's own edit, or DVC's rewrite
for `-S`, reported in its own column); `refused by DVC` when DVC stopped with its own one line
before running any stage and nothing changed; `NOT CLEAN` otherwise, with the changed files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = {"teacher.epochs": 2, "student.epochs": 2, "teacher.save_epochs": [1],
        "student.save_epochs": [1], "extract.n_samples": 128, "analyze.sae_epochs": 5,
        "analyze.ica_components": 4}  # fmt: skip
SKIP = (".git/", ".dvc/cache/", ".dvc/tmp/", ".kdlab/")

SET = [  # (-S settings): every float field's NaN/inf route, ranges, names, types, lists, strings
    ["kd.alpha=nan"], ["kd.alpha=.nan"], ["kd.alpha=.inf"], ["teacher.lr=nan"],
    ["student.lr=-.inf"], ["teacher.momentum=.nan"], ["student.weight_decay=.inf"],
    ["teacher.gamma=.nan"], ["student.label_smoothing=.nan"], ["kd.logit.temperature=.nan"],
    ["kd.logit.weight=.inf"], ["kd.dkd.nckd_weight=.nan"], ["kd.crd.temperature=.nan"],
    ["kd.at.p=.nan"], ["kd.nst.c=.inf"], ["kd.rkd.angle_weight=.nan"], ["kd.ft.rate=.nan"],
    ["kd.fitnets.weight=.nan"], ["kd.minilm.weight=.inf"], ["analyze.sae_l1=.nan"],
    ["kd.alpha=1.5"], ["kd.alpha=-0.1"], ["student.epochs=-3"], ["teacher.epochs=0"],
    ["teacher.batch_size=0"], ["teacher.lr=0"], ["seed=-1"], ["extract.n_samples=2"],
    ["analyze.sae_expansion=0"], ["teacher.save_epochs=[50]"], ["student.milestones=[2,1]"],
    ["kd.method=logti"], ["student.arch=resnet9"], ["teacher.arch=vit_huge"], ["device=tpu"],
    ["extract.dtype=float64"], ["teacher.schedule=linear"], ["extract.layers=[stage9]"],
    ["analyze.sae_layers=[stage9]"], ["kd.fitnets.hint_layer=stage4"],
    ["kd.alpha=abc"], ["teacher.epochs=2.5"], ["teacher.nesterov=maybe"], ["seed=[0]"],
    ["kd.method=at", "kd.at.stages=[]"], ["kd.method=nst", "kd.nst.stages=[]"],
    ["kd.at.stages=[stage1,stage1]"], ["extract.layers=[stage1,stage1]"], ["grid.seeds=[]"],
    ["grid.datasets=[]"], ["grid.alphas=[.nan]"],
    ["slurm.partition='bad partition;rm -rf'"], ["slurm.account=a$(id)"],
    ["slurm.extra=['--qos=x;rm -rf ~']"], ["slurm.mem=lots"], ["slurm.time=4h"],
    ["data.mirror=ftp://example.org"], ["teacher.lrr=0.1"], ["data.name=mnist"],
]  # fmt: skip


def _set(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        params = params[part]
    params[leaf] = value


EDITS = {  # name -> a function of the parsed params.yaml that returns the text to write
    "kd.alpha: .nan": lambda p: _dump(p, {"kd.alpha": float("nan")}),
    "teacher.lr: .inf": lambda p: _dump(p, {"teacher.lr": float("inf")}),
    "kd.at.stages: [] with kd.method: at": lambda p: _dump(p, {"kd.method": "at",
                                                               "kd.at.stages": []}),
    "no kd: section": lambda p: _dump({k: v for k, v in p.items() if k != "kd"}, {}),
    "no teacher: section": lambda p: _dump({k: v for k, v in p.items() if k != "teacher"}, {}),
    "no kd.ft.rate key": lambda p: _without(p, "kd", "ft", "rate"),
    "kd: null": lambda p: _dump({**p, "kd": None}, {}),
    "invalid YAML": lambda p: "seed: 0\nkd: [unclosed\n",
    "params.yaml a list": lambda p: "- seed\n- kd\n",
    "params.yaml empty": lambda p: "",
}  # fmt: skip


def _dump(params: dict, changes: dict) -> str:
    params = json.loads(json.dumps(params))
    for dotted, value in changes.items():
        _set(params, dotted, value)
    return yaml.safe_dump(params, sort_keys=False)


def _without(params: dict, *path: str) -> str:
    params = json.loads(json.dumps(params))
    node = params
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return yaml.safe_dump(params, sort_keys=False)


FAULTS = ["models", "metrics/student", "plots/figures", "checkpoints", "tmpfs:models"]


def env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_clone(base: Path) -> Path:
    origin, clone = base / "origin", base / "clone"
    files = sh(["git", "ls-files", "-co", "--exclude-standard", "-z"], ROOT).stdout
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, origin / rel)
    ident = ["-c", "user.name=kdlab battery", "-c", "user.email=battery@kdlab.invalid"]
    sh(["git", "init", "-q", "-b", "main", str(origin)], base)
    sh(["git", "add", "-A"], origin)
    sh(["git", *ident, "commit", "-qm", "snapshot"], origin)
    sh(["git", "clone", "-q", str(origin), str(clone)], base)
    sh(["git", "config", "user.name", "kdlab battery"], clone)
    sh(["git", "config", "user.email", "battery@kdlab.invalid"], clone)
    sh([sys.executable, "-m", "kdlab.plots_page", ".dvc/plots-offline.html"], clone, check=False)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for dotted, value in TINY.items():
        _set(params, dotted, value)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["dvc", "repro"], clone)
    sh(["git", "add", "-A"], clone)
    sh(["git", "commit", "-qm", "good results"], clone)
    return clone


def snapshot(repo: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith(SKIP):
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def restore(repo: Path) -> None:
    # Not `git checkout -- .`: after a refused `dvc exp run -S`, git's index can hold the
    # rewritten params.yaml's stat data with HEAD's blob (same size), so git sees no change.
    (repo / ".git/index").unlink()
    sh(["git", "reset", "-q", "--hard", "HEAD"], repo)
    sh(["dvc", "checkout", "-f", "-q"], repo, check=False)


@contextlib.contextmanager
def fault(repo: Path, what: str):
    if what.startswith("tmpfs:"):
        target = repo / what.split(":", 1)[1]
        saved = repo.parent / "saved"
        shutil.copytree(target, saved, symlinks=True)
        room = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()) + (64 << 10)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(target)],
                       check=True)  # fmt: skip
        try:
            shutil.copytree(saved, target, dirs_exist_ok=True, symlinks=True)
            yield
        finally:
            subprocess.run(["umount", str(target)], check=True)
            shutil.rmtree(saved)
        return
    target = repo / what
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(target), str(target)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)
        if created:
            target.rmdir()


def outcome(proc: subprocess.CompletedProcess, good: dict, after: dict) -> dict:
    out = proc.stdout + proc.stderr
    changed = sorted(k for k in set(good) | set(after) if good.get(k) != after.get(k))
    lines = re.findall(r"^kdlab(?: [\w ]+)?: error: .*$", out, re.M)  # the guard: `kdlab:`
    others = [c for c in changed if c != "params.yaml"]
    dvc_errors = re.findall(r"^ERROR: .*$", out, re.M)
    clean = proc.returncode != 0 and "Traceback" not in out and not others
    if clean and len(lines) == 1:
        result = "refused"
    elif clean and not lines and "Running stage" not in out and len(dvc_errors) == 1:
        result = "refused by DVC"  # before any stage ran: DVC's line, nothing changed
    else:
        result = "NOT CLEAN"
    return {"exit": proc.returncode, "kdlab_line": lines[0] if lines else None,
            "traceback": "Traceback" in out, "params_yaml_changed": "params.yaml" in changed,
            "changed": others, "outcome": result, "dvc_errors": dvc_errors[:2]}  # fmt: skip


def run_battery(repo: Path) -> list[dict]:
    good = snapshot(repo)
    base_params = yaml.safe_load((repo / "params.yaml").read_text())
    cases = []

    def record(route: str, what: str, proc):
        entry = {"route": route, "input": what, **outcome(proc, good, snapshot(repo))}
        cases.append(entry)
        print(f"{entry['outcome']:9} {route:22} {what}", flush=True)
        restore(repo)
        now = snapshot(repo)
        left = sorted(k for k in set(good) | set(now) if good.get(k) != now.get(k))
        assert not left, f"could not restore after {what}: {left}"

    for settings in SET:
        cmd = ["dvc", "exp", "run", *[a for s in settings for a in ("-S", s)]]
        record("dvc exp run -S", " ".join(settings), sh(cmd, repo, check=False))
    for name, make_text in EDITS.items():
        (repo / "params.yaml").write_text(make_text(base_params))
        record("params.yaml + dvc repro", name, sh(["dvc", "repro"], repo, check=False))
    for where in FAULTS:
        changed = _dump(base_params, {"kd.alpha": 0.7})
        (repo / "params.yaml").write_text(changed)
        with fault(repo, where):
            proc = sh(["dvc", "repro"], repo, check=False)
        label = f"{where.split(':')[1]} on a full tmpfs" if ":" in where else f"{where} read-only"
        record("fault + dvc repro", label, proc)
    return cases


def write_results(cases: list[dict], out_dir: Path, seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    commit = sh(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip()
    meta = {"commit": commit, "dirty": bool(sh(["git", "status", "--porcelain"], ROOT).stdout),
            "cpu": cpu, "cores": os.cpu_count(), "seconds": round(seconds, 1),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (out_dir / "bad-inputs.json").write_text(json.dumps({**meta, "cases": cases}, indent=1))
    by_route: dict[str, list[dict]] = {}
    for case in cases:
        by_route.setdefault(case["route"], []).append(case)
    rows = ["| route | tried | refused in one kdlab line, nothing changed | refused by DVC "
            "before any stage, nothing changed | params.yaml left rewritten | not clean |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for route, group in by_route.items():
        refused = sum(c["outcome"] == "refused" for c in group)
        by_dvc = [c["input"] for c in group if c["outcome"] == "refused by DVC"]
        rewritten = sum(c["params_yaml_changed"] for c in group if route == "dvc exp run -S")
        bad = [f"{c['input']} ({', '.join(c['changed'][:2])}{' ...' * (len(c['changed']) > 2)} "
               "changed)" for c in group if c["outcome"] == "NOT CLEAN"]  # fmt: skip
        rows.append(f"| {route} | {len(group)} | {refused} | "
                    f"{len(by_dvc)}{': ' + '; '.join(by_dvc) if by_dvc else ''} | "
                    f"{rewritten if route == 'dvc exp run -S' else '(the edit)'} | "
                    f"{len(bad)}{': ' + '; '.join(bad) if bad else ''} |")  # fmt: skip
    text = (f"# Bad inputs on a real DVC clone\n\n`tests/faults/bad_inputs.py` on {meta['date']}, "
            f"commit {commit}{' (+ uncommitted changes)' if meta['dirty'] else ''}, {cpu}, "
            f"{meta['cores']} cores, {meta['seconds']} s. Raw: [bad-inputs.json](bad-inputs.json)."
            "\n\n" + "\n".join(rows) + "\n")  # fmt: skip
    (out_dir / "bad-inputs.md").write_text(text)
    print(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the read-only and tmpfs faults mount file systems: run as root")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kdlab-battery-") as tmp:
        repo = make_clone(Path(tmp))
        cases = run_battery(repo)
    write_results(cases, args.out, time.monotonic() - start)
    return 0 if all(c["outcome"] != "NOT CLEAN" for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
