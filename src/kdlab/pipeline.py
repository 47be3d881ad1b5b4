"""Reading dvc.yaml as kdlab needs it: its stages, `${...}` filled from params.yaml, each stage's
outputs, and what brings back the outputs DVC removed before a stage that then failed.

Light on purpose (no torch, no registries): every stage imports it for its error lines.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdlab.errors import ConfigError
from kdlab.schema import load_yaml

_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def load_stages(dvc_yaml: Path) -> Mapping[str, Any]:
    try:
        return load_yaml(dvc_yaml.read_text()).get("stages", {})
    except (OSError, AttributeError) as exc:
        raise ConfigError(f"{dvc_yaml} cannot be read as a pipeline ({exc})") from None


def _lookup(raw: Any, dotted: str) -> tuple[bool, Any]:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _interpolate(text: str, raw: Mapping) -> str:
    return _INTERPOLATION.sub(lambda m: str(_lookup(raw, m.group(1))[1]), text)


def stage_outputs(stage_body: Mapping[str, Any], raw: Mapping) -> list[tuple[str, bool]]:
    """(path, cached) of each output, metric and plot of one stage (`cache: false`: in git)."""
    found = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage_body.get(kind, []) or []:
            path, options = (next(iter(entry.items())) if isinstance(entry, Mapping)
                             else (entry, None))  # fmt: skip
            cached = not (isinstance(options, Mapping) and options.get("cache") is False)
            found.append((_interpolate(str(path), raw), cached))
    return found


def _git_tracks(root: Path, path: str) -> bool:
    proc = subprocess.run(["git", "ls-files", "--", path], cwd=root, capture_output=True,
                          text=True, check=False)  # fmt: skip
    return proc.returncode == 0 and bool(proc.stdout.strip())


def stage_restore_commands(root: Path, stage: str, raw: Mapping) -> list[str]:
    """The commands that bring back what DVC removed before running `stage`, for a stage that
    then failed: `dvc checkout <path>` for each cached output dvc.lock records, `git checkout --
    <paths>` for the `cache: false` ones git tracks (DVC's cache has no copy of those)."""
    try:
        body = load_stages(root / "dvc.yaml").get(stage) or {}
        lock = load_yaml((root / "dvc.lock").read_text()) or {}
    except (OSError, ValueError, ConfigError, AttributeError):
        return []
    locked = {out.get("path") for kind in ("outs",)
              for out in ((lock.get("stages") or {}).get(stage) or {}).get(kind) or []
              if isinstance(out, Mapping)}  # fmt: skip
    dvc_paths, git_paths = [], []
    for path, cached in stage_outputs(body, raw):
        if (root / path).exists():
            continue
        if cached and path in locked:
            dvc_paths.append(path)
        elif not cached and _git_tracks(root, path):
            git_paths.append(path)
    commands = [f"dvc checkout {shlex.quote(p)}" for p in dvc_paths]
    if git_paths:
        commands.append("git checkout -- " + " ".join(shlex.quote(p) for p in git_paths))
    return commands


def stage_restore_advice(root: Path, stage: str, raw: Mapping) -> str:
    """ "" when DVC removed nothing this stage had; else the sentence with the commands."""
    commands = stage_restore_commands(root, stage, raw)
    if not commands:
        return ""
    shown = " && ".join(commands)
    return f"; DVC removed this stage's last outputs before it ran: `{shown}` brings them back"
