"""Resume: a killed run restarted with the same params ends as an uninterrupted one, bit for bit."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdlab.errors import CheckpointError
from kdlab.stages import train_paraphraser, train_student, train_teacher
from kdlab.training import run as run_module
from kdlab.training.checkpoint import load_checkpoint, save_checkpoint

from ..conftest import flip_tensor_bytes, tiny_params, tool_env, write_params


def stage_args(workdir: Path, data_dir: Path, role: str = "teacher") -> list[str]:
    return [
        "--params", str(workdir / "params.yaml"), "--data", str(data_dir),
        "--model-dir", str(workdir / "models" / role),
        "--metrics-dir", str(workdir / "metrics" / role),
        "--resume", str(workdir / "checkpoints" / role / "resume.pt"),
    ]  # fmt: skip


def make_workdir(path: Path, **overrides) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_params(path / "params.yaml", tiny_params(**overrides))
    return path


def assert_same_run(a: Path, b: Path, role: str = "teacher") -> None:
    """Same final weights (bit for bit), same model directory file for file and byte for byte
    (milestones included), same metrics.json and per-epoch values."""
    model_a = load_checkpoint(a / "models" / role / "model.pt")
    model_b = load_checkpoint(b / "models" / role / "model.pt")
    assert model_a["epoch"] == model_b["epoch"]
    assert model_a["metrics"] == model_b["metrics"]
    for key, tensor in model_a["state_dict"].items():
        assert torch.equal(tensor, model_b["state_dict"][key]), key
    assert tree_bytes(a / "models" / role) == tree_bytes(b / "models" / role)
    metrics = Path("metrics") / role / "metrics.json"
    assert (a / metrics).read_text() == (b / metrics).read_text()
    tsvs = sorted(p.relative_to(a) for p in (a / "metrics" / role / "plots").rglob("*.tsv"))
    assert tsvs == sorted(p.relative_to(b) for p in (b / "metrics" / role / "plots").rglob("*.tsv"))
    for tsv in tsvs:
        assert without_timestamps(a / tsv) == without_timestamps(b / tsv), tsv


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def without_timestamps(tsv: Path) -> list[list[str]]:
    """DVCLive adds a wall-clock column outside DVC runs; everything else must be identical."""
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "timestamp"]
    return [[row[i] for i in keep] for row in rows]


def test_same_params_twice_give_identical_outputs(tmp_path, digits_dir):
    for name in ("one", "two"):
        work = make_workdir(tmp_path / name)
        assert train_teacher.main(stage_args(work, digits_dir)) == 0
    assert_same_run(tmp_path / "one", tmp_path / "two")


def resume_epoch(resume: Path) -> int:
    try:
        return load_checkpoint(resume)["epoch"]
    except CheckpointError:  # not written yet
        return -1


@pytest.mark.integration
def test_sigkill_then_restart_equals_uninterrupted(tmp_path, digits_dir):
    overrides = {"teacher.arch": "resnet20", "teacher.epochs": 8, "teacher.batch_size": 64,
                 "teacher.save_epochs": [2, 6]}  # fmt: skip
    reference = make_workdir(tmp_path / "reference", **overrides)
    assert train_teacher.main(stage_args(reference, digits_dir)) == 0

    work = make_workdir(tmp_path / "killed", **overrides)
    cmd = [sys.executable, "-m", "kdlab.stages.train_teacher", *stage_args(work, digits_dir)]
    proc = subprocess.Popen(cmd, env=tool_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    resume = work / "checkpoints/teacher/resume.pt"
    while resume_epoch(resume) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "training never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    # nothing that looks like an output: those appear only once the last epoch is done
    assert not (work / "models/teacher").exists() and not (work / "metrics/teacher").exists()
    killed_at = load_checkpoint(resume)["epoch"]
    assert 3 <= killed_at < 8

    restart = subprocess.run(cmd, env=tool_env(), capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr
    assert f"at epoch {killed_at} ({killed_at} epochs already complete)" in restart.stderr
    # the milestone of epoch 2, written before the kill, is in the output of the resumed run
    assert sorted(p.name for p in (work / "models/teacher/milestones").iterdir()) == [
        "epoch_0002.pt", "epoch_0006.pt"]  # fmt: skip
    assert_same_run(reference, work)


def test_checkpoint_of_other_params_is_not_resumed(tmp_path, digits_dir, caplog):
    fresh = make_workdir(tmp_path / "fresh")
    assert train_teacher.main(stage_args(fresh, digits_dir)) == 0

    # A complete resume checkpoint from a run with another lr sits where this run looks.
    other = make_workdir(tmp_path / "other", **{"teacher.lr": 0.05})
    assert train_teacher.main(stage_args(other, digits_dir)) == 0
    work = make_workdir(tmp_path / "work")
    resume = work / "checkpoints/teacher/resume.pt"
    save_checkpoint(load_checkpoint(other / "checkpoints/teacher/resume.pt"), resume)

    with caplog.at_level(logging.INFO):
        assert train_teacher.main(stage_args(work, digits_dir)) == 0
    assert "not resuming from" in caplog.text and "starting fresh" in caplog.text
    assert_same_run(fresh, work)


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"\x00" * 100)


@pytest.mark.parametrize(("damage", "message"), [
    (zero_bytes, "corrupt or unreadable"),
    (flip_tensor_bytes, "does not match its content checksum"),  # torch would load this
])  # fmt: skip
def test_corrupt_resume_checkpoint_is_not_used(tmp_path, digits_dir, caplog, damage, message):
    fresh = make_workdir(tmp_path / "fresh")
    assert train_teacher.main(stage_args(fresh, digits_dir)) == 0
    work = make_workdir(tmp_path / "work")
    resume = work / "checkpoints/teacher/resume.pt"
    resume.parent.mkdir(parents=True)
    shutil.copy(fresh / "checkpoints/teacher/resume.pt", resume)
    damage(resume)
    with caplog.at_level(logging.INFO):
        assert train_teacher.main(stage_args(work, digits_dir)) == 0
    assert message in caplog.text and "starting fresh" in caplog.text
    assert_same_run(fresh, work)


def test_model_checkpoint_contents_and_milestones(tmp_path, digits_dir):
    work = make_workdir(tmp_path / "w", **{"kd.alpha": 0.3})
    assert train_teacher.main(stage_args(work, digits_dir)) == 0
    args = [
        *stage_args(work, digits_dir, "student"),
        "--teacher",
        str(work / "models/teacher/model.pt"),
    ]
    assert train_student.main(args) == 0
    model = load_checkpoint(work / "models/student/model.pt", "kdlab.model/1")
    assert model["arch"] == "resnet8" and model["role"] == "student" and model["epoch"] == 3
    assert model["params"]["kd"]["alpha"] == 0.3 and model["params"]["seed"] == 0
    assert set(model["metrics"]) == {
        "train/loss", "train/ce", "train/kd", "train/acc", "test/loss", "test/acc", "lr",
    }  # fmt: skip
    assert 0.0 <= model["metrics"]["test/acc"] <= 1.0
    milestone = load_checkpoint(work / "models/student/milestones/epoch_0002.pt")
    assert milestone["epoch"] == 2 and milestone["metrics"] != model["metrics"]
    assert sorted(p.name for p in (work / "models/student/milestones").iterdir()) == [
        "epoch_0002.pt"
    ]


def test_student_without_teacher_file_is_one_line_error(tmp_path, digits_dir, capsys):
    work = make_workdir(tmp_path / "w")
    args = [*stage_args(work, digits_dir, "student"), "--teacher", str(work / "missing.pt")]
    assert train_student.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("kdlab train_student: error: checkpoint") and "does not exist" in err[-1]
    )
    assert not (work / "models/student").exists()


def test_cuda_requested_without_a_gpu_is_one_line_error(tmp_path, digits_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    work = make_workdir(tmp_path / "w", device="cuda")
    assert train_teacher.main(stage_args(work, digits_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "kdlab train_teacher: error: device is cuda but no CUDA device is visible; "
        "use device: auto or cpu"
    )
    assert not (work / "models").exists() and not (work / "metrics").exists()


class SimulatedKill(BaseException):
    """Raised right after an epoch's resume checkpoint is written, like a SIGKILL there."""


OWN_MODULE = {"fitnets": "connector", "ft": "translator", "crd": "embed_s", "dkd": None}
"""A module each method trains, saved in the model file (dkd: none, only its warm-up ramp)."""


@pytest.mark.parametrize("method", list(OWN_MODULE))
def test_resume_restores_the_methods_own_modules(method, tmp_path, digits_dir, monkeypatch):
    overrides = {"kd.method": method, "student.epochs": 4, "kd.ft.paraphraser_epochs": 1,
                 "kd.crd.negatives": 256, "kd.dkd.warmup": 3}  # fmt: skip
    teacher_dir = make_workdir(tmp_path / "teacher", **overrides)
    assert train_teacher.main(stage_args(teacher_dir, digits_dir)) == 0
    teacher = teacher_dir / "models/teacher/model.pt"
    paraphraser = tmp_path / "paraphraser.pt"
    argv = ["--params", str(teacher_dir / "params.yaml"), "--data", str(digits_dir),
            "--teacher", str(teacher), "--out", str(paraphraser)]  # fmt: skip
    assert train_paraphraser.main(argv) == 0

    def student_args(work):
        return [*stage_args(work, digits_dir, "student"), "--teacher", str(teacher),
                "--paraphraser", str(paraphraser)]  # fmt: skip

    reference = make_workdir(tmp_path / "reference", **overrides)
    assert train_student.main(student_args(reference)) == 0

    work = make_workdir(tmp_path / "killed", **overrides)
    real_save = run_module.save_checkpoint
    saved = []

    def save_then_die(payload, path):
        real_save(payload, path)
        if Path(path).name == "resume.pt":
            saved.append(path)
            if len(saved) == 2:  # two epochs complete, their resume checkpoint written
                raise SimulatedKill

    monkeypatch.setattr(run_module, "save_checkpoint", save_then_die)
    with pytest.raises(SimulatedKill):
        train_student.main(student_args(work))
    monkeypatch.undo()
    assert load_checkpoint(work / "checkpoints/student/resume.pt")["epoch"] == 2
    assert train_student.main(student_args(work)) == 0
    assert_same_run(reference, work, "student")
    final = load_checkpoint(work / "models/student/model.pt")["distiller_state_dict"]
    expected = load_checkpoint(reference / "models/student/model.pt")["distiller_state_dict"]
    assert final.keys() == expected.keys()
    if OWN_MODULE[method]:
        assert any(key.startswith(OWN_MODULE[method]) for key in final)
    for key, tensor in expected.items():
        assert torch.equal(final[key], tensor), key


def test_ft_without_its_paraphraser_is_one_line_error(tmp_path, digits_dir, capsys):
    work = make_workdir(tmp_path / "w", **{"kd.method": "ft"})
    assert train_teacher.main(stage_args(work, digits_dir)) == 0
    args = [*stage_args(work, digits_dir, "student"),
            "--teacher", str(work / "models/teacher/model.pt")]  # fmt: skip
    assert train_student.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "kdlab train_student: error: kd.method ft needs --paraphraser (an earlier stage's output)"
    )
    assert not (work / "models/student").exists()
