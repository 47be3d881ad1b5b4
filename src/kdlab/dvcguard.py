"""kdlab's word before DVC's: every `dvc repro` / `dvc exp run` of this environment is checked
before DVC touches the workspace.

DVC writes `-S` values into params.yaml, stashes the workspace for `--queue`, and (for a
changed output path such as data/${data.name}) checks out outputs, all before the first stage
runs; a refusal by the `check` stage comes after all of that. So a `.pth` file in the
environment's site-packages (`make install` puts it there: `python -m kdlab.dvcguard
--install`) runs `guard()` at the start of every Python process, and for a `dvc` command that
runs the pipeline of a kdlab repository it:

1. takes the workspace (kdlab.workspace): a second run in a running workspace is refused before
   anything changes;
2. reads params.yaml (invalid YAML: the line and column);
3. applies the `-S` values the way DVC will (DVC's own Hydra override code, on a copy of
   params.yaml, each point of a sweep) and validates the result like the check stage: an unknown
   key names the nearest valid one, a bad value names the field and the valid values;
4. for a run in the workspace, preflights it as the check stage does (every output can be
   replaced, the disk has room), and in any case refuses when the file system has less room
   than DVC needs for its own bookkeeping.

A refusal is one line, `kdlab: error: ...`, exit status 2, with params.yaml and every output as
they were. Anything else (another repository, another command, a command line DVC itself will
refuse) is left to DVC untouched. The `check` stage still runs first in every pipeline: the
guard is the early word, the stage the one that always runs (also where the guard is not
installed, e.g. a `pip install` without `make install`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

PTH_NAME = "kdlab_dvcguard.pth"
PTH_LINE = (
    "import sys; sys.argv and sys.argv[0].endswith(('/dvc', 'dvc/__main__.py')) and "
    "__import__('kdlab.dvcguard').dvcguard.guard()\n"
)
DVC_FLOOR_BYTES = 32 << 20
"""Free space DVC needs before any stage runs (its locks, the params rewrite, git objects of the
stash commit, dvc.lock): below it DVC fails with "unexpected error"."""
_HELD: list[int] = []  # the workspace lock, open until this process exits
_RAN: list[bool] = []  # site-packages can be read twice (lib64 -> lib): guard once


class Refusal(Exception):
    """What the guard says instead of letting DVC start."""


def find_root(start: Path) -> Path | None:
    for path in (start, *start.parents):
        if (path / ".dvc").is_dir():
            return path
    return None


def is_kdlab_repo(root: Path) -> bool:
    try:
        return "kdlab.stages.check" in (root / "dvc.yaml").read_text()
    except OSError:
        return False


def _dvc_args(words: Sequence[str]):
    """DVC's own parse of the command line; None for one DVC will refuse (or help) itself."""
    from dvc.cli import parse_args

    try:
        return parse_args(list(words))
    except (SystemExit, Exception):
        return None


def _key_exists(raw, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _params_overrides(root: Path, cwd: Path, set_params: Sequence[str]) -> list[str]:
    """The `-S` overrides of root/params.yaml (DVC's `[<file>:]key=value` grouping)."""
    from dvc.utils.cli_parse import to_path_overrides

    target = (root / "params.yaml").resolve()
    found: list[str] = []
    for path, overrides in to_path_overrides(set_params).items():
        if (cwd / path).resolve() == target:
            found += overrides
    return found


def _sweep_points(overrides: list[str]) -> list[list[str]]:
    """Each experiment a `-S` sweep (`kd.alpha=0.1,0.5`) makes, as DVC expands it."""
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides

    if not any(o.is_sweep_override() for o in to_hydra_overrides(overrides)):
        return [overrides]
    return [point["params.yaml"] for point in get_hydra_sweeps({"params.yaml": overrides})]


def _check_keys(raw, overrides: list[str]) -> None:
    from dvc.utils.hydra import to_hydra_overrides

    from kdlab.flat import flatten
    from kdlab.schema import nearest

    for override in to_hydra_overrides(overrides):
        key = override.key_or_group
        if override.is_add() or override.is_force_add():
            continue  # adds a key: the validation below names it if kdlab has no such key
        if not _key_exists(raw, key):
            known = [k for k in flatten(raw) if "." in k or k in raw]
            raise Refusal(
                f"-S {override.input_line}: params.yaml has no key {key}{nearest(key, known)}"
                "; nothing was changed"
            )


def _applied(root: Path, overrides: list[str]):
    """params.yaml with `overrides` applied by DVC's own code, on a copy."""
    from dvc.utils.hydra import apply_overrides

    from kdlab.config import read_params_file
    from kdlab.fsutil import temp_directory

    with temp_directory(root / ".dvc" / "tmp", "params-guard") as scratch:
        copy = scratch / "params.yaml"
        shutil.copyfile(root / "params.yaml", copy)
        apply_overrides(copy, overrides)
        return read_params_file(copy)


def _check_free_space(root: Path) -> None:
    free = shutil.disk_usage(root).free
    if free < DVC_FLOOR_BYTES:
        raise Refusal(
            f"not enough disk space in {root}: {free / 2**20:.2f} MiB free, DVC needs about "
            f"{DVC_FLOOR_BYTES >> 20} MiB for its own bookkeeping before any stage runs; "
            "nothing was changed: free space (or `dvc gc`) and run again"
        )


def inspect(words: Sequence[str], cwd: Path) -> None:
    """Raise Refusal (or a KdlabError) when this `dvc` command must not start."""
    args = _dvc_args(words)
    if args is None:
        return
    kind = getattr(args.func, "__name__", "")
    if kind not in ("CmdRepro", "CmdExperimentsRun"):
        return
    root = find_root((cwd / getattr(args, "cd", ".")).resolve())
    if root is None or not is_kdlab_repo(root):
        return
    if kind == "CmdExperimentsRun" and args.run_all:
        return  # runs the queue in its own executors
    queued = kind == "CmdExperimentsRun" and (args.queue or args.tmp_dir)
    from kdlab.workspace import acquire

    command = " ".join(["dvc", *words])
    _HELD.append(acquire(root, "queue" if queued else "run", command))
    _check_free_space(root)
    set_params = list(args.set_param or []) if kind == "CmdExperimentsRun" else []
    theirs = (root / "src").resolve()
    if (theirs / "kdlab").is_dir() and theirs != Path(__file__).resolve().parents[1]:
        _validate_with_their_code(theirs, root, cwd, set_params, queued)
    else:
        validate(root, cwd, set_params, queued)


def _validate_with_their_code(src: Path, root: Path, cwd: Path, set_params, queued) -> None:
    """`validate` with the repository's own kdlab (another clone sharing this environment, at
    another commit, with other registries: what its stages will run with, PYTHONPATH=src)."""
    import json
    import subprocess

    request = json.dumps([str(root), str(cwd), set_params, queued])
    code = ("import json, sys; from kdlab.dvcguard import validate_request; "
            "sys.exit(validate_request(sys.argv[1]))")  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", code, request], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode == 2 and proc.stdout.strip():
        raise Refusal(proc.stdout.strip())
    if proc.returncode != 0:  # e.g. a commit from before the guard: the check stage decides
        return


def validate_request(request: str) -> int:
    """The subprocess side of _validate_with_their_code: 2 and the refusal on stdout, or 0."""
    import json

    from kdlab.errors import KdlabError

    root, cwd, set_params, queued = json.loads(request)
    try:
        validate(Path(root), Path(cwd), set_params, queued)
    except (Refusal, KdlabError) as exc:
        print(exc)
        return 2
    return 0


def validate(root: Path, cwd: Path, set_params: Sequence[str], queued: bool) -> None:
    """params.yaml with the `-S` values applied, each point, as the check stage would."""
    from kdlab.config import read_params_file
    from kdlab.errors import ConfigError
    from kdlab.validate import check_raw

    raw = read_params_file(Path(os.path.relpath(root / "params.yaml", cwd)))
    overrides = _params_overrides(root, cwd, set_params) if set_params else []
    points = [[]]
    if overrides:
        try:
            _check_keys(raw, overrides)
            points = _sweep_points(overrides)
        except Refusal:
            raise
        except Exception as exc:  # Hydra's parse error of a malformed override
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Refusal(f"-S {' '.join(overrides)} is not a valid override: {first}") from None
    for point in points:
        merged = _applied(root, point) if point else raw
        shown = f"-S {' '.join(point)}: " if point else ""
        try:
            params = check_raw(merged, grid_points=False, device=False)
            if not queued:
                from kdlab.preflight import preflight

                preflight(merged, params, root, root / "dvc.yaml")
        except ConfigError as exc:
            where = "" if point or str(exc).startswith("params.yaml") else "params.yaml: "
            raise Refusal(f"{shown}{where}{exc}; nothing was changed") from None


def guard(argv: Sequence[str] | None = None) -> None:
    """Called from the .pth file in a `dvc` process: refuse (exit 2) or return to DVC."""
    if argv is None:
        if _RAN:
            return
        _RAN.append(True)
        argv = sys.argv
    words = argv[1:]
    if "repro" not in words and not ("exp" in words and "run" in words):
        return
    from kdlab.errors import KdlabError

    try:
        inspect(words, Path.cwd())
    except (Refusal, KdlabError) as exc:
        print(f"kdlab: error: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    except Exception as exc:  # a bug here must not stop DVC: say so, and let DVC run
        print(f"kdlab: warning: the DVC guard was skipped ({type(exc).__name__}: {exc})",
              file=sys.stderr)  # fmt: skip


def site_packages() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def installed() -> bool:
    path = site_packages() / PTH_NAME
    return path.is_file() and path.read_text() == PTH_LINE


def install() -> Path:
    from kdlab.fsutil import write_bytes_atomic

    path = site_packages() / PTH_NAME
    write_bytes_atomic(path, PTH_LINE.encode())
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python -m kdlab.dvcguard --install")
    print(f"kdlab: DVC guard installed: {install()}")
