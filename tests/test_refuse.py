"""Refuse before anything is removed: `dvc repro` and `dvc exp run -S` with invalid params stop
at the `check` stage, and every output and tracked file stays exactly as it was."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from .conftest import run, tiny_params, write_params
from .repos import TINY, dvc, git, make_clone

pytestmark = pytest.mark.integration

OUTPUT_DIRS = ("data", "models", "metrics", "plots")

INVALID = {
    "kd.alpha": 1.5,
    "student.arch": "resnet9",
    "kd.logit.bogus": 1,
    "extract.layers": ["stage9"],
    "analyze.sae_layers": ["stage9"],
    "kd.fitnets.hint_layer": "stage4",
    "teacher.batch_size": 0,
}
if not torch.cuda.is_available():
    INVALID["device"] = "cuda"


def outputs(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes()
            for d in OUTPUT_DIRS for p in sorted((repo / d).rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    clone = make_clone(tmp_path_factory.mktemp("refuse"))
    dvc(clone, "repro")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "good results")
    return clone


def assert_untouched(repo: Path, before: dict[str, bytes], out: str,
                     said: str = "kdlab check: error:") -> None:  # fmt: skip
    assert said in out, out
    assert "Running stage 'train_" not in out and "Running stage 'extract'" not in out, out
    changed = git(repo, "status", "--porcelain").splitlines()
    assert changed in ([], [" M params.yaml"]), changed  # the edit itself, nothing else
    after = outputs(repo)
    assert sorted(after) == sorted(before), "an output file appeared or disappeared"
    assert [name for name in before if after[name] != before[name]] == []
    git(repo, "checkout", "-q", "params.yaml")


@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_params_then_dvc_repro_leaves_everything(repo, key):
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{key: INVALID[key]}))
    proc = run(["dvc", "repro"], cwd=repo, check=False)
    assert proc.returncode != 0
    assert_untouched(repo, before, proc.stdout + proc.stderr)


@pytest.mark.parametrize("setting", ["kd.alpha=1.5", "extract.layers=[stage9]",
                                     "analyze.sae_layers=[stage9]"])  # fmt: skip
def test_invalid_exp_run_set_param_leaves_everything(repo, setting):
    before = outputs(repo)
    proc = run(["dvc", "exp", "run", "-S", setting], cwd=repo, check=False)
    assert proc.returncode != 0
    assert_untouched(repo, before, proc.stdout + proc.stderr)


def test_dvc_of_an_environment_that_is_not_activated_is_one_line(repo, bare_python):
    """`.venv/bin/dvc repro` without `source .venv/bin/activate`: DVC runs the stages with the
    `python` first on PATH, here one with nothing but the standard library."""
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # as `make install` leaves it
    path = f"{bare_python.parent}{os.pathsep}{os.environ['PATH']}"
    try:
        proc = run([".venv/bin/dvc", "repro"], cwd=repo, check=False, env_extra={"PATH": path})
    finally:
        (repo / ".venv").unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert_untouched(repo, before, out, said=f"kdlab: {bare_python} is not the "
                     "project's environment (no module PIL, dvc, dvclive and 8 more): run "
                     "`source .venv/bin/activate` and run the command again")  # fmt: skip
