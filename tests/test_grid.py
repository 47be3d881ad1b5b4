"""The grid: planning (names, order, counts), validation, and queueing into a real DVC queue."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from kdlab.cli import main
from kdlab.distill.specs import load_specs
from kdlab.grid import GridConfig, is_teacher_experiment, load_grid, plan_grid

from .conftest import run, tiny_params, write_params
from .repos import TINY, dvc, make_clone

KD_METHODS = ", ".join(m for m in load_specs() if m != "none")


def test_plan_names_order_and_counts():
    grid = GridConfig(datasets=("cifar100", "svhn"), methods=("at", "rkd"), alphas=(0.5, 0.9),
                      seeds=(0, 1, 2))  # fmt: skip
    plan = plan_grid(grid)
    roles = [e.role for e in plan]
    # teachers first, then baselines (not crossed with alpha), then KD students
    assert roles == ["teacher"] * 6 + ["baseline"] * 6 + ["student"] * 24
    names = [e.name for e in plan]
    assert len(set(names)) == len(names)
    assert "cifar100-teacher-s1" in names and "cifar100-none-s1" in names
    at = next(e for e in plan if e.name == "cifar100-at-a0.5-s1")
    assert at.teacher == "cifar100-teacher-s1" and at.targets == ()
    assert at.set_params == ["data.name=cifar100", "seed=1", "kd.method=at", "kd.alpha=0.5"]
    teacher = plan[0]
    assert teacher.targets == ("train_teacher",) and teacher.teacher is None
    assert teacher.queue_command() == (
        "dvc exp run --queue -n cifar100-teacher-s0 -S data.name=cifar100 -S seed=0 train_teacher"
    )
    assert plan_grid(grid) == plan  # deterministic
    one_method = GridConfig(methods=("logit",), alphas=(0.5,), baseline=False, seeds=(0, 1))
    assert len(plan_grid(one_method)) == 4


def test_teacher_names_are_recognised():
    assert is_teacher_experiment("cifar100-teacher-s12")
    assert is_teacher_experiment("fashion_mnist-teacher-s0")
    assert is_teacher_experiment("cifar100-teacher-arch_resnet32-epochs60-s1")
    assert not is_teacher_experiment("cifar100-at-a0.5-s1")
    assert not is_teacher_experiment("fashion_mnist-logit-a0.5-temperature8-s0")
    assert not is_teacher_experiment(None)


def test_axes_cross_by_what_they_change():
    grid = load_grid({"datasets": ["cifar100"], "methods": ["logit", "at"], "alphas": [0.5],
                      "seeds": [0, 1], "axes": {"teacher.arch": ["resnet56", "resnet110"],
                                                "kd.logit.temperature": [2.0, 8],
                                                "student.lr": [0.05, 0.1]}})  # fmt: skip
    plan = plan_grid(grid)
    by_role = {r: [e for e in plan if e.role == r] for r in ("teacher", "baseline", "student")}
    # one teacher per teacher.arch and seed; nothing else reaches the teacher
    assert [e.name for e in by_role["teacher"]] == [
        "cifar100-teacher-arch_resnet56-s0", "cifar100-teacher-arch_resnet56-s1",
        "cifar100-teacher-arch_resnet110-s0", "cifar100-teacher-arch_resnet110-s1"]  # fmt: skip
    assert by_role["teacher"][2].set_params == [
        "data.name=cifar100", "seed=0", "teacher.arch=resnet110"]  # fmt: skip
    # the baseline: teacher and student axes, never a KD axis
    assert len(by_role["baseline"]) == 2 * 2 * 2
    assert all("kd.logit.temperature" not in " ".join(e.set_params) for e in by_role["baseline"])
    assert "cifar100-none-arch_resnet110-lr0.05-s1" in [e.name for e in by_role["baseline"]]
    # kd.logit.* only for logit: logit 2 arch × 2 T × 2 lr × 2 seeds, at 2 × 2 × 2
    students = by_role["student"]
    assert sum(e.name.startswith("cifar100-logit") for e in students) == 16
    assert sum(e.name.startswith("cifar100-at") for e in students) == 8
    wanted = "cifar100-logit-a0.5-arch_resnet110-temperature8-lr0.1-s1"
    logit = next(e for e in students if e.name == wanted)
    assert logit.teacher == "cifar100-teacher-arch_resnet110-s1"
    assert logit.set_params == ["data.name=cifar100", "seed=1", "teacher.arch=resnet110",
                                "kd.method=logit", "kd.alpha=0.5", "kd.logit.temperature=8",
                                "student.lr=0.1"]  # fmt: skip
    names = [e.name for e in plan]
    assert len(set(names)) == len(names) and plan_grid(grid) == plan
    assert not any(is_teacher_experiment(e.name) for e in plan if e.role != "teacher")


def test_paired_axis_and_per_method_alphas():
    grid = load_grid({"datasets": ["cifar100"], "methods": ["logit", "at"], "seeds": [0],
                      "alphas": {"logit": [0.9], "at": [0.001]},
                      "axes": {"teacher.arch,student.arch": [
                          ["resnet56", "resnet20"], ["resnet110", "resnet32"]]}})  # fmt: skip
    plan = plan_grid(grid)
    names = [e.name for e in plan]
    assert names == [
        "cifar100-teacher-teacher_arch_resnet56+student_arch_resnet20-s0",
        "cifar100-teacher-teacher_arch_resnet110+student_arch_resnet32-s0",
        "cifar100-none-teacher_arch_resnet56+student_arch_resnet20-s0",
        "cifar100-none-teacher_arch_resnet110+student_arch_resnet32-s0",
        "cifar100-logit-a0.9-teacher_arch_resnet56+student_arch_resnet20-s0",
        "cifar100-at-a0.001-teacher_arch_resnet56+student_arch_resnet20-s0",
        "cifar100-logit-a0.9-teacher_arch_resnet110+student_arch_resnet32-s0",
        "cifar100-at-a0.001-teacher_arch_resnet110+student_arch_resnet32-s0",
    ]  # two pairs, not four
    assert plan[5].set_params == [
        "data.name=cifar100",
        "seed=0",
        "teacher.arch=resnet56",
        "student.arch=resnet20",
        "kd.method=at",
        "kd.alpha=0.001",
    ]
    assert plan[5].teacher == names[0]
    for name, experiment in zip(names, plan, strict=True):
        assert is_teacher_experiment(name) == (experiment.role == "teacher")


def test_teacher_params_are_what_the_teacher_stages_read():
    """TEACHER_PARAMS (what keys a teacher per value) = the params prepare and train_teacher
    depend on in dvc.yaml."""
    import yaml

    from kdlab.grid import TEACHER_PARAMS

    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    read = {p.split(".")[0] for s in ("prepare", "train_teacher") for p in stages[s]["params"]}
    assert read == set(TEACHER_PARAMS)


def test_same_leaf_names_are_told_apart():
    grid = load_grid({"datasets": ["digits"], "methods": ["at"], "alphas": [0.5], "seeds": [0],
                      "axes": {"kd.at.weight": [1, 2], "kd.rkd.weight": [5]}})  # fmt: skip
    names = [e.name for e in plan_grid(grid)]
    assert "digits-at-a0.5-at_weight1-s0" in names
    assert not any("rkd_weight" in n for n in names)  # rkd is not in the grid's methods


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"methods": ["at", "dino"]},
            f"grid.methods[1] must be one of {KD_METHODS}",
        ),
        ({"methods": ["none"]}, f"grid.methods[0] must be one of {KD_METHODS}"),
        ({"alphas": [0.0]}, "grid.alphas[0] must be in (0, 1]"),
        ({"alphas": [1.5]}, "grid.alphas[0] must be in (0, 1]"),
        ({"seeds": [0, 0]}, "grid.seeds lists a value twice"),
        ({"seeds": []}, "grid.seeds must not be empty"),
        (
            {"datasets": ["mnist"]},
            "grid.datasets[0] must be one of basic_motions, cifar10, cifar100, digits",
        ),
        ({"method": ["at"]}, "grid.method is not a known key"),
        ({"axes": {"kd.alpha": [0.5]}}, "grid.axes.kd.alpha: sweep kd.alpha with grid.alphas"),
        ({"axes": {"seed": [1]}}, "grid.axes.seed: sweep seed with grid.seeds"),
        ({"axes": {"slurm.gpus": [1, 2]}}, "grid.axes.slurm.gpus: slurm.* is not a param"),
        ({"axes": {"kd.logit.temperature": []}}, "must be a non-empty list of values"),
        ({"axes": {"kd.logit.temperature": [2, 2.0]}}, "lists a value twice"),
        ({"axes": {"Teacher Arch": ["x"]}}, "keys must be param paths"),
        (
            {"axes": {"teacher.arch,student.arch": [["resnet20"]]}},
            "grid.axes.teacher.arch,student.arch[0] must be a list of 2 values, one per param",
        ),
        (
            {"axes": {"kd.logit.weight,student.lr": [[1, 0.1]]}},
            "params changed together must reach the same experiments; these reach method:logit, "
            "student",
        ),
        (
            {"methods": ["at", "logit"], "alphas": {"at": [0.5]}},
            "grid.alphas must have one entry per grid method (at, logit): missing logit",
        ),
        ({"methods": ["at"], "alphas": {"at": [0.5, 1.5]}}, "grid.alphas.at[1] must be in (0, 1]"),
    ],
)
def test_bad_grid_is_one_clear_line(raw, message):
    with pytest.raises(Exception, match=re.escape(message)):
        load_grid(raw)


def test_cli_bad_grid_exits_2_without_traceback(tmp_path, monkeypatch, capsys):
    write_params(tmp_path / "params.yaml", tiny_params(grid={"alphas": [2]}))
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "queue", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "kdlab grid: error: grid.alphas[0] must be in (0, 1], got 2.0"
    ]


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"kd.logit.temprature": [2]},
         "grid.axes.kd.logit.temprature: kd.logit.temprature is not a param of"),
        ({"kd.logit": [2]}, "grid.axes.kd.logit: kd.logit is a section, not a param"),
        ({"teacher.arch,student.arch": [["resnet14", "resnet8"], ["resnet20", "resnet9"]]},
         "grid point digits-teacher-teacher_arch_resnet20+student_arch_resnet9-s0 "
         "(data.name=digits seed=0 teacher.arch=resnet20 student.arch=resnet9): "
         "student.arch must be one of"),
        # every value checked as its experiments would run, before anything is queued
        ({"kd.logit.temperature": [2, -1]},
         "grid point digits-logit-a0.5-temperatureneg1-s0 (data.name=digits seed=0 "
         "kd.method=logit kd.alpha=0.5 kd.logit.temperature=-1): kd.logit.temperature"),
        ({"student.arch": ["resnet8", "vit_tiny"]},
         "grid point digits-fitnets-a0.5-arch_vit_tiny-s0"),
    ],
)  # fmt: skip
def test_cli_bad_axis_is_refused_before_queueing(tmp_path, monkeypatch, capsys, axes, message):
    grid = {**GRID, "methods": ["logit", "fitnets"], "axes": axes}
    write_params(tmp_path / "params.yaml", tiny_params(grid=grid))
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "queue", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cli_without_grid_section(tmp_path, monkeypatch, capsys):
    params = tiny_params()
    params.pop("grid", None)
    write_params(tmp_path / "params.yaml", params)
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "queue"]) == 2
    assert "has no grid: section" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The real DVC queue
# ----------------------------------------------------------------------------------------------

GRID = {"datasets": ["digits"], "methods": ["logit"], "alphas": [0.5], "seeds": [0]}
NAMES = ["digits-teacher-s0", "digits-none-s0", "digits-logit-a0.5-s0"]


def actions(output: str) -> dict[str, str]:
    """name -> action from `kdlab grid queue`'s table."""
    return {m[0]: m[1] for m in re.findall(r"^(\S+)\s{2,}(.+?)\s{2,}dvc exp run", output, re.M)}


def queue_rows(repo: Path) -> dict[str, str]:
    """name -> status from `dvc queue status` (name is the 2nd column, status the last)."""
    rows = {}
    for line in dvc(repo, "queue", "status").splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in NAMES:
            rows[words[1]] = words[-1]
    return rows


@pytest.mark.integration
def test_grid_queue_is_idempotent_and_trains_each_teacher_once(tmp_path):
    repo = make_clone(tmp_path, tiny_params(**TINY, grid=GRID))
    dry = run(["kdlab", "grid", "queue", "--dry-run"], cwd=repo).stdout
    assert "would queue 3," in dry and not queue_rows(repo)
    first = run(["kdlab", "grid", "queue"], cwd=repo).stdout
    assert "queued 3," in first and queue_rows(repo) == dict.fromkeys(NAMES, "Queued")
    second = run(["kdlab", "grid", "queue"], cwd=repo).stdout
    assert actions(second) == dict.fromkeys(NAMES, "already queued")

    try:
        dvc(repo, "queue", "start", "-j", "2")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rows = queue_rows(repo)
            if rows and all(s in ("Success", "Failed") for s in rows.values()):
                break
            time.sleep(2)
    finally:
        run(["dvc", "queue", "stop"], cwd=repo, check=False)
    assert rows == dict.fromkeys(NAMES, "Success"), rows

    logs = {name: dvc(repo, "queue", "logs", name) for name in NAMES}
    # Two workers start two experiments at once, so which one trains the teacher is up to
    # DVC; that exactly one does is kdlab's guarantee.
    trained = [name for name, log in logs.items() if "training teacher" in log]
    assert len(trained) == 1, {n: log[-2000:] for n, log in logs.items()}
    for name in set(NAMES) - set(trained):
        # restored from the run-cache, or (if it started while the teacher was training)
        # copied from the published run after waiting for the experiment training it
        assert ("Stage 'train_teacher' is cached" in logs[name]
                or "already trained by another experiment" in logs[name]), logs[name]  # fmt: skip

    third = run(["kdlab", "grid", "queue"], cwd=repo).stdout
    assert actions(third) == dict.fromkeys(NAMES, "finished") and "queued 0," in third
    shown = dvc(repo, "exp", "show", "--no-pager", "--csv")
    assert all(name in shown for name in NAMES)
