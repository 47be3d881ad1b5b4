"""The scripts in slurm/: the login-node data script runs; the GPU test job is valid bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
    shutil.rmtree(repo / "data/digits")
    again = run(["dvc", "repro", "prepare"], cwd=repo)
    # `check` always validates (it is never restored from the run-cache); prepare is restored
    assert "Running stage 'prepare'" not in again.stdout, again.stdout
    assert (repo / "data/digits/meta.json").is_file()


def test_job_scripts_are_valid_bash():
    for name in ("test-gpu.sbatch", "bench-gpu.sbatch", "experiment.sbatch", "prepare-data.sh"):
        assert subprocess.run(["bash", "-n", str(REPO_ROOT / "slurm" / name)]).returncode == 0


@pytest.mark.integration
def test_readme_local_cluster_commands_start_and_stop_it(tmp_path):
    from ..services import SLURM_BINARIES, read_pid, require

    require(SLURM_BINARIES, "SLURM")
    root = tmp_path / "cluster"
    out = run(["python", "-m", "tests.services", "start", str(root)], cwd=REPO_ROOT).stdout
    assert f"export SLURM_CONF={root / 'slurm.conf'}" in out
    pids = [read_pid(root / "slurmctld.pid"), read_pid(root / "slurmd.pid")]
    try:
        sinfo = run(["sinfo", "-h", "-o", "%T"], cwd=tmp_path,
                    env_extra={"SLURM_CONF": str(root / "slurm.conf")})  # fmt: skip
        assert sinfo.stdout.strip() == "idle"
    finally:
        run(["python", "-m", "tests.services", "stop", str(root)], cwd=REPO_ROOT)
    for pid in pids:
        assert pid is not None and not Path(f"/proc/{pid}").exists()
