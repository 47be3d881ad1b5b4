"""Every artefact is verified where it is consumed: flipped, truncated or NaN-filled bytes are
refused in one line naming the file, and never used."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.checksum import sha256_file
from kdlab.errors import CheckpointError
from kdlab.extract.activations import META_CHECKSUM, metadata_checksum
from kdlab.stages import analyze, extract, train_student, train_teacher
from kdlab.training.checkpoint import load_checkpoint, save_checkpoint

from .conftest import flip_tensor_bytes
from .training.test_resume import assert_same_run, make_workdir, stage_args

TINY = {"extract.n_samples": 64, "analyze.sae_epochs": 2, "analyze.ica_components": 2}


def test_flipped_tensor_bytes_are_detected(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint({"format": "test/1", "w": torch.arange(10_000, dtype=torch.float32)}, path)
    flip_tensor_bytes(path)
    raw = torch.load(path, weights_only=True)  # torch itself loads it without complaint
    assert not torch.equal(raw["w"], torch.arange(10_000, dtype=torch.float32))
    with pytest.raises(CheckpointError, match="does not match its content checksum"):
        load_checkpoint(path)


def test_flipped_store_entry_is_retrained_not_copied(tmp_path, digits_dir, caplog, monkeypatch):
    monkeypatch.setenv("KDLAB_ONCE_DIR", str(tmp_path / "store"))
    first = make_workdir(tmp_path / "first")
    assert train_teacher.main(stage_args(first, digits_dir)) == 0
    (entry,) = [p for p in (tmp_path / "store").iterdir() if p.is_dir()]
    flip_tensor_bytes(entry / "model/model.pt")
    second = make_workdir(tmp_path / "second")
    with caplog.at_level(logging.INFO):
        assert train_teacher.main(stage_args(second, digits_dir)) == 0
    assert "not using the published run" in caplog.text and "training again" in caplog.text
    assert_same_run(first, second)
    load_checkpoint(entry / "model/model.pt")  # republished intact


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, digits_dir) -> Path:
    """Teacher, student and activation cache of a tiny experiment, made by the stages."""
    work = make_workdir(tmp_path_factory.mktemp("pipeline"), **TINY)
    assert train_teacher.main(stage_args(work, digits_dir)) == 0
    teacher = ["--teacher", str(work / "models/teacher/model.pt")]
    assert train_student.main([*stage_args(work, digits_dir, "student"), *teacher]) == 0
    assert extract.main(extract_args(work, digits_dir)) == 0
    return work


def extract_args(work: Path, data: Path) -> list[str]:
    return ["--params", str(work / "params.yaml"), "--data", str(data),
            "--teacher-dir", str(work / "models/teacher"),
            "--student-dir", str(work / "models/student"),
            "--out", str(work / "data/activations")]  # fmt: skip


def analyze_args(work: Path) -> list[str]:
    return ["--params", str(work / "params.yaml"), "--activations", str(work / "data/activations"),
            "--teacher", str(work / "models/teacher/model.pt"),
            "--student", str(work / "models/student/model.pt"),
            "--metrics", str(work / "metrics/analysis.json"),
            "--figures", str(work / "plots/figures"),
            "--plot-data", str(work / "plots/data")]  # fmt: skip


@pytest.fixture
def copy(pipeline, tmp_path) -> Path:
    work = tmp_path / "copy"
    shutil.copytree(pipeline, work)
    return work


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_extract_refuses_a_flipped_model(copy, digits_dir, capsys):
    flip_tensor_bytes(copy / "models/student/model.pt")
    assert extract.main(extract_args(copy, digits_dir)) == 2
    line = last_line(capsys)
    assert line.startswith("kdlab extract: error: checkpoint") and "models/student/model.pt" in line
    assert "content checksum" in line


def test_analyze_works_on_the_intact_cache(copy, capsys):
    assert analyze.main(analyze_args(copy)) == 0
    assert "cka/embedding" in json.loads((copy / "metrics/analysis.json").read_text())


def rewrite_array(work: Path, key: str, change, reseal: bool) -> Path:
    """Apply `change` to an activation array; `reseal` also updates its recorded checksums
    (as if extraction itself had produced those values)."""
    cache = work / "data/activations"
    meta = json.loads((cache / "metadata.json").read_text())
    path = cache / meta["arrays"][key]["file"]
    array = np.load(path)
    change(array)
    np.save(path, array)
    if reseal:
        meta["arrays"][key]["sha256"] = sha256_file(path)
        meta[META_CHECKSUM] = metadata_checksum(meta)
        (cache / "metadata.json").write_text(json.dumps(meta))
    return path


def test_perturbed_activations_are_refused(copy, capsys):
    path = rewrite_array(copy, "student/embedding", lambda a: a.__setitem__(0, a[0] + 1e-3), False)
    assert analyze.main(analyze_args(copy)) == 2
    line = last_line(capsys)
    assert str(path) in line and "does not match its sha256" in line and "dvc repro" in line
    assert not (copy / "metrics/analysis.json").exists()


def test_nan_activations_are_one_line_naming_the_array(copy, capsys):
    path = rewrite_array(copy, "teacher/stage2", lambda a: a.__setitem__(3, np.nan), True)
    assert analyze.main(analyze_args(copy)) == 2
    line = last_line(capsys)
    assert str(path) in line and "NaN or infinite" in line


def test_truncated_array_and_metadata_are_one_line(copy, capsys):
    cache = copy / "data/activations"
    array = cache / "teacher__embedding.npy"
    array.write_bytes(array.read_bytes()[:100])
    assert analyze.main(analyze_args(copy)) == 2
    assert str(array) in last_line(capsys)
    meta = cache / "metadata.json"
    meta.write_text(meta.read_text()[:50])
    assert analyze.main(analyze_args(copy)) == 2
    line = last_line(capsys)
    assert str(meta) in line and "corrupt (not JSON)" in line


def test_edited_metadata_is_refused(copy, capsys):
    meta_path = copy / "data/activations/metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["indices"][0] += 1
    meta_path.write_text(json.dumps(meta))
    assert analyze.main(analyze_args(copy)) == 2
    assert "does not match its checksum" in last_line(capsys)


def test_edited_dataset_meta_is_refused(tmp_path, digits_dir, capsys):
    """meta.json's mean/std normalise every batch: a changed digit must not go unnoticed."""
    data = tmp_path / "digits"
    shutil.copytree(digits_dir, data)
    meta = json.loads((data / "meta.json").read_text())
    meta["mean"][0] += 1e-6
    (data / "meta.json").write_text(json.dumps(meta))
    work = make_workdir(tmp_path / "w")
    assert train_teacher.main(stage_args(work, data)) == 2
    line = last_line(capsys)
    assert str(data / "meta.json") in line and "does not match its checksum" in line
