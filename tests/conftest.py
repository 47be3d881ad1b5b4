"""Shared fixtures: the real digits dataset prepared once, and params.yaml builders."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def tiny_params(**overrides) -> dict:
    """The repository's params.yaml with small, fast training settings (and dotted overrides)."""
    params = default_params()
    for role in ("teacher", "student"):
        params[role].update(arch="resnet8", epochs=3, batch_size=128, save_epochs=[2])
    params["device"] = "cpu"
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(params), sort_keys=False))
    return path


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's python/dvc first on PATH, no colour, no pager."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    env = {**tool_env(), **(env_extra or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's digits prepared by the real `prepare` code (no network)."""
    from kdlab.data.datasets import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", out)
    return out
