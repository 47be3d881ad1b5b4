"""Submission logic without a cluster: params, the rendered script, selection, the ledger."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kdlab.errors import ConfigError, KdlabError
from kdlab.grid import GridConfig, plan_grid
from kdlab.slurm.config import SlurmConfig, load_slurm_config
from kdlab.slurm.ledger import JobRecord, Ledger, locked_ledger
from kdlab.slurm.submit import Context, make_packs, names_of_job, render_script, select

from ..conftest import REPO_ROOT


def context(tmp_path: Path, **config) -> Context:
    template = tmp_path / "slurm/experiment.sbatch"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text((REPO_ROOT / "slurm/experiment.sbatch").read_text())
    return Context(tmp_path, "ab" * 20, tmp_path / ".dvc/cache", False, SlurmConfig(**config))


def test_config_overrides_and_sbatch_options():
    cfg = load_slurm_config({"partition": "gpu", "gpus": 1, "time": "2-00:00:00"},
                            {"gpus": 4, "account": None, "mem": "64G"})  # fmt: skip
    assert cfg.gpus == 4 and cfg.mem == "64G" and cfg.account == ""
    assert cfg.sbatch_options() == ["--cpus-per-task=4", "--time=2-00:00:00", "--partition=gpu",
                                    "--gpus=4", "--mem=64G"]  # fmt: skip
    assert "--gpus" not in " ".join(load_slurm_config({"gpus": 0}).sbatch_options())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"time": "4h"}, "slurm.time must be minutes, HH:MM:SS or D-HH:MM:SS, got '4h'"),
        ({"mem": "lots"}, "slurm.mem must be a size like 16G or 4000M"),
        ({"gpus": -1}, "slurm.gpus must be in [0, 64]"),
        ({"cpus": 0}, "slurm.cpus must be in [1, 1024]"),
        ({"extra": ["qos=high"]}, "slurm.extra[0] must be one sbatch option like --qos=high"),
        ({"partitions": "gpu"}, "slurm.partitions is not a known key"),
    ],
)
def test_bad_slurm_params_are_one_clear_line(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_slurm_config(raw)


def test_rendered_script_is_valid_bash_with_every_field(tmp_path):
    ctx = context(tmp_path, partition="gpu", account="lab", gpus=2, extra=("--qos=high",))
    grid = GridConfig(methods=("at",), alphas=(0.5,), seeds=(0,))
    student = next(e for e in plan_grid(grid) if e.role == "student")
    script = render_script(ctx, [student])
    assert not re.search(r"\{\{\w+\}\}", script)
    for line in ("#SBATCH --job-name=kdlab-digits-at-a0.5-s0", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --gpus=2", "#SBATCH --qos=high",
                 "COMMIT=" + "ab" * 20):  # fmt: skip
        assert line in script.splitlines(), line
    workspace = tmp_path / ".kdlab/workspaces" / ("digits-at-a0.5-s0-" + "ab" * 4)
    assert (f"start_experiment digits-at-a0.5-s0 {workspace} -n digits-at-a0.5-s0 "
            "-S data.name=digits -S seed=0 -S kd.method=at -S kd.alpha=0.5") in script  # fmt: skip
    assert "#SBATCH --comment=kdlab:digits-at-a0.5-s0" in script
    assert "dvc exp push --no-cache origin" in script  # shared cache, no DVC remote
    # every #SBATCH line comes before the first command, or sbatch ignores it
    lines = script.splitlines()
    first_command = next(i for i, x in enumerate(lines) if x and not x.startswith("#"))
    assert all(i < first_command for i, x in enumerate(lines) if x.startswith("#SBATCH"))
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_remote_makes_jobs_fetch_and_push_the_run_cache(tmp_path):
    ctx = context(tmp_path)
    ctx = Context(ctx.repo, ctx.commit, ctx.cache_dir, True, ctx.config)
    script = render_script(ctx, plan_grid(GridConfig(seeds=(0,)))[:1])
    assert "dvc fetch --run-cache" in script and "dvc exp push --run-cache origin" in script
    assert script.rstrip().endswith('echo "kdlab: job $JOB done, $(date -Is)"')


def test_unknown_template_field_is_reported(tmp_path):
    ctx = context(tmp_path)
    (tmp_path / "slurm/experiment.sbatch").write_text("#!/bin/bash\n{{gpu_count}}\n")
    with pytest.raises(ConfigError, match=r"slurm.template uses \{\{gpu_count\}\}"):
        render_script(ctx, plan_grid(GridConfig(seeds=(0,)))[:1])


def test_select_adds_the_teachers_it_needs():
    plan = plan_grid(GridConfig(methods=("at", "logit"), alphas=(0.5,), seeds=(0, 1)))
    chosen = [e.name for e in select(plan, "digits-at-*-s1")]
    assert chosen == ["digits-teacher-s1", "digits-at-a0.5-s1"]
    with pytest.raises(ConfigError, match="matches no experiment"):
        select(plan, "cifar*")


def test_ledger_round_trip_and_corruption(tmp_path):
    path = tmp_path / "ledger.json"
    record = JobRecord("a", "12", "c0ffee", 1, "/ws/a", "/logs/a-12.out", "2026-11-21T10:00:00",
                       ["12"])  # fmt: skip
    with locked_ledger(path) as ledger:
        ledger.put(record)
    assert Ledger(path).get("a") == record
    assert json.loads(path.read_text())["experiments"]["a"]["job_id"] == "12"
    with pytest.raises(RuntimeError), locked_ledger(path) as ledger:
        ledger.put(JobRecord("b", "13", "c0ffee", 1, "", "", "", ["13"]))
        raise RuntimeError("sbatch of the next one failed")
    assert Ledger(path).get("b") is not None  # submitted jobs stay recorded
    path.write_text('{"experiments": {"a": {"name": "a"')
    with pytest.raises(KdlabError, match=r"ledger .* is corrupt"):
        Ledger(path)


def test_kdlab_check_validates_grid_and_slurm(tmp_path, monkeypatch, capsys):
    from kdlab.cli import main

    from ..conftest import tiny_params, write_params

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params(**{"slurm.time": "soon"}))
    assert main(["check"]) == 2
    assert "slurm.time must be minutes" in capsys.readouterr().err
    write_params(tmp_path / "params.yaml", tiny_params(**{"grid.methods": ["fitnet"]}))
    assert main(["check"]) == 2
    assert "grid.methods[0] must be one of" in capsys.readouterr().err
    write_params(tmp_path / "params.yaml", tiny_params())
    assert main(["check"]) == 0


def test_queued_params_become_overrides():
    from kdlab.slurm.queued import param_overrides

    base = {"seed": 0, "kd": {"method": "logit", "alpha": 0.5, "at": {"stages": ["stage3"]}}}
    changed = {"seed": 2, "kd": {"method": "at", "alpha": 0.5, "at": {"stages": ["s1", "s2"]}}}
    assert param_overrides(base, changed) == (
        ("seed", "2"), ("kd.method", "at"), ("kd.at.stages", "[s1, s2]"))  # fmt: skip
    assert param_overrides(base, base) == ()


def test_uncommitted_changes_are_refused_unless_allowed(tmp_path):
    from kdlab.slurm.submit import make_context

    from ..conftest import run

    repo = context(tmp_path).repo
    (repo / "params.yaml").write_text("seed: 0\n")
    run(["git", "init", "-q"], cwd=repo)
    run(["dvc", "init", "-q"], cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@kdlab.invalid", "commit", "-qm", "x"],
        cwd=repo)  # fmt: skip
    assert make_context(repo, SlurmConfig()).commit == run(["git", "rev-parse", "HEAD"],
                                                           cwd=repo).stdout.strip()  # fmt: skip
    (repo / "params.yaml").write_text("seed: 1\n")
    with pytest.raises(KdlabError, match=r"uncommitted changes \(M params.yaml\): jobs run the"):
        make_context(repo, SlurmConfig())
    assert make_context(repo, SlurmConfig(), allow_dirty=True).cache_dir.name == "cache"


def test_packs_keep_teachers_apart_and_group_students_by_teacher():
    plan = plan_grid(GridConfig(methods=("logit", "at"), alphas=(0.5,), seeds=(0, 1)))
    packs = make_packs(plan, 3)
    names = [[e.name for e in pack] for pack in packs]
    assert names == [
        ["digits-teacher-s0", "digits-teacher-s1"],
        ["digits-none-s0", "digits-logit-a0.5-s0", "digits-at-a0.5-s0"],
        ["digits-none-s1", "digits-logit-a0.5-s1", "digits-at-a0.5-s1"],
    ]
    assert [len(p) for p in make_packs(plan, 1)] == [1] * len(plan)
    assert sum(len(p) for p in make_packs(plan, 4)) == len(plan)


def test_a_pack_is_one_job_running_each_experiment_in_its_own_workspace(tmp_path):
    ctx = context(tmp_path, experiments_per_gpu=3)
    grid = GridConfig(methods=("logit", "at"), alphas=(0.5,), seeds=(0,))
    pack = make_packs(plan_grid(grid), 3)[1]
    script = render_script(ctx, pack)
    assert "#SBATCH --job-name=kdlab-digits-none-s0+2" in script
    assert "#SBATCH --comment=kdlab:digits-none-s0,digits-logit-a0.5-s0,digits-at-a0.5-s0" in script
    starts = [line for line in script.splitlines() if line.startswith("start_experiment ")]
    assert [line.split()[1] for line in starts] == [e.name for e in pack]
    assert len({line.split()[2] for line in starts}) == 3  # three workspaces
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert names_of_job("kdlab-digits-none-s0+2", "kdlab:a,b,c") == ["a", "b", "c"]
    assert names_of_job("kdlab-old", "(null)") == ["old"]
    assert names_of_job("other", "(null)") == []
    with pytest.raises(ConfigError, match=r"slurm.experiments_per_gpu must be in \[1, 64\]"):
        load_slurm_config({"experiments_per_gpu": 0})


def test_no_cluster_dry_run_renders_every_script_and_status_says_so_in_one_line(tmp_path):
    """On a laptop (no SLURM installed) --dry-run still renders every job; status and a real
    submit name the problem in one line instead of squeue's fatal error."""
    from ..conftest import run
    from ..repos import make_clone
    from ..services import path_without_slurm

    repo = make_clone(tmp_path)
    path_env = path_without_slurm(tmp_path)  # no squeue/sbatch: not a login node
    dry = run(["kdlab", "slurm", "submit", "--dry-run"], cwd=repo, env_extra=path_env)
    from kdlab.grid import load_grid_plan

    plan = load_grid_plan(repo / "params.yaml")
    assert dry.stdout.count("#!/bin/bash") == len(plan)
    assert f"{len(plan)} experiments: would submit {len(plan)}" in dry.stdout
    assert "no SLURM cluster reachable" in dry.stderr and "Traceback" not in dry.stderr
    for env in (path_env, {"SLURM_CONF": str(tmp_path / "missing.conf")}):
        for command in (["status"], ["submit"]):
            proc = run(["kdlab", "slurm", *command], cwd=repo, env_extra=env, check=False)
            assert proc.returncode != 0 and not proc.stdout
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                "kdlab slurm: error: no SLURM cluster reachable: set SLURM_CONF or run on the "
                "login node ("
            ), lines
    assert not (repo / ".kdlab").exists() or not list((repo / ".kdlab").rglob("*.sbatch"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"partition": "bad partition;rm -rf"}, "slurm.partition must be a SLURM partition name"),
        ({"partition": "gpu\n#SBATCH --mem=1"}, "slurm.partition must be a SLURM partition name"),
        ({"account": "lab$(id)"}, "slurm.account must be a SLURM account name"),
        ({"extra": ["--qos=high\nrm -rf ~"]}, "slurm.extra[0] must be one sbatch option"),
        ({"extra": ["--qos=$(touch x)"]}, "slurm.extra[0] must be one sbatch option"),
        ({"extra": ["--qos=high --mem=1"]}, "slurm.extra[0] must be one sbatch option"),
        ({"mem": "16G;x"}, "slurm.mem must be a size like 16G"),
        ({"time": "1:00\nx"}, "slurm.time must be minutes"),
        ({"scratch": "/scratch\nrm -rf ~"}, "slurm.scratch must be a path without control"),
        ({"template": ""}, "slurm.template must name the sbatch template"),
    ],
)
def test_hostile_slurm_strings_are_refused(raw, message):
    """What reaches an #SBATCH line or a shell line must be what SLURM accepts (setup alone is
    free-form shell, by design)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_slurm_config(raw)


def test_values_that_pass_cannot_run_a_command_in_the_job(tmp_path):
    """A scratch path full of shell syntax is quoted wherever it is rendered: the job script,
    run for real (its clone fails at once: no repository there), never runs it."""
    pwned = tmp_path / "PWNED"
    scratch = tmp_path / f"scr atch $(touch {pwned}) `touch {pwned}` ;touch {pwned}"
    ctx = context(tmp_path, scratch=str(scratch), partition="gpu,debug", extra=("--qos=a&b",))
    ctx = Context(tmp_path / "no-repo", ctx.commit, ctx.cache_dir, False, ctx.config)
    (ctx.repo / "slurm").mkdir(parents=True)
    (ctx.repo / "slurm/experiment.sbatch").write_text(
        (REPO_ROOT / "slurm/experiment.sbatch").read_text())  # fmt: skip
    grid = GridConfig(methods=("at",), alphas=(0.5,), seeds=(0,))
    script = render_script(ctx, plan_grid(grid)[:2])
    for line in script.splitlines():
        if line.startswith("#SBATCH"):  # one token each: sbatch splits at whitespace
            assert len(line.split()) == 2, line
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", str(path)], cwd=tmp_path, capture_output=True, timeout=120,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert not pwned.exists()
