"""The scripts in slurm/: the login-node data script runs; the GPU test job is valid bash."""

from __future__ import annotations

import subprocess

import pytest

from ..conftest import REPO_ROOT, run
from ..repos import git, make_clone


@pytest.mark.integration
def test_prepare_data_fills_the_run_cache_and_restores_params(tmp_path):
    repo = make_clone(tmp_path)
    out = run(["slurm/prepare-data.sh", "digits"], cwd=repo)
    assert "Running stage 'prepare'" in out.stdout + out.stderr
    assert "no DVC remote" in out.stdout
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert any((repo / ".dvc/cache/runs").rglob("*")), "prepare left no run-cache entry"
    # what a job on a compute node then does: restore, not download or rebuild
    again = run(["dvc", "repro", "prepare"], cwd=repo)
    assert "Running stage" not in again.stdout and "cached" in again.stdout


def test_job_scripts_are_valid_bash():
    for name in ("test-gpu.sbatch", "experiment.sbatch", "prepare-data.sh"):
        assert subprocess.run(["bash", "-n", str(REPO_ROOT / "slurm" / name)]).returncode == 0
