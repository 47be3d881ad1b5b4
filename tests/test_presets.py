"""Presets (configs/*.yaml): each applies to params.yaml, validates and plans its grid; the
RepDistiller CIFAR-100 preset is that paper's recipe; a bad preset changes nothing."""

from __future__ import annotations

import shutil

import pytest
import yaml

from kdlab.cli import main
from kdlab.grid import load_grid_plan

from .conftest import REPO_ROOT

PRESETS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"cifar100-repdistiller.yaml", "fashion-mnist-kd.yaml"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_applies_validates_and_plans(workdir, preset, capsys):
    before = (workdir / "params.yaml").read_text()
    assert main(["preset", f"configs/{preset.name}"]) == 0
    after = (workdir / "params.yaml").read_text()
    assert after != before and "# One experiment of kdlab." in after  # comments kept
    assert main(["check"]) == 0
    assert load_grid_plan(workdir / "params.yaml")
    assert main(["preset", f"configs/{preset.name}"]) == 0  # applying twice changes nothing
    assert (workdir / "params.yaml").read_text() == after
    assert "0 params set" in capsys.readouterr().out


def test_repdistiller_recipe(workdir):
    assert main(["preset", "configs/cifar100-repdistiller.yaml"]) == 0
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    for role in ("teacher", "student"):
        train = params[role]
        assert (train["epochs"], train["lr"], train["batch_size"], train["weight_decay"]) == (
            240, 0.05, 64, 0.0005)  # fmt: skip
        assert (train["schedule"], train["milestones"], train["gamma"]) == (
            "multistep", [150, 180, 210], 0.1)  # fmt: skip
        assert (train["momentum"], train["nesterov"], train["label_smoothing"]) == (0.9, False, 0.0)
    kd = params["kd"]
    assert kd["logit"]["temperature"] == 4.0
    plan = load_grid_plan(workdir / "params.yaml")
    assert len(plan) == 2 * 5 * (1 + 1 + 6)  # pairs × seeds × (teacher, baseline, 6 methods)
    pairs = set()
    for exp in plan:
        sets = dict(exp.overrides)
        pairs.add((sets["teacher.arch"], sets["student.arch"]))
        method = sets.get("kd.method")
        if method == "logit":  # RepDistiller: 0.1·CE + 0.9·T²·KL
            assert float(sets["kd.alpha"]) == 0.9 and kd["logit"]["weight"] == 1.0
        elif method not in (None, "none"):  # CE + β·L, up to a factor 0.999
            alpha = float(sets["kd.alpha"])
            beta = {"fitnets": 100, "at": 1000, "nst": 50, "rkd": 1, "ft": 200}[method]
            assert 1 - alpha == pytest.approx(0.999)
            assert alpha * kd[method]["weight"] == pytest.approx(0.999 * beta)
    assert pairs == {("resnet56", "resnet20"), ("resnet110", "resnet32")}
    assert (kd["rkd"]["distance_weight"], kd["rkd"]["angle_weight"]) == (25.0, 50.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teacher:\n  epoks: 3\n", "preset key teacher.epoks is not a param of params.yaml"),
        ("teacher: 3\n", "preset key teacher must be a section"),
        ("teacher:\n  lr: -1\n", "would make params.yaml invalid: teacher.lr must be in"),
        ("grid:\n  axes: {kd.logit.temprature: [2]}\n",
         "grid.axes.kd.logit.temprature: kd.logit.temprature is not a param"),
        ("[1, 2]\n", "must be a mapping of params"),
    ],
)  # fmt: skip
def test_bad_preset_changes_nothing(workdir, capsys, text, message):
    (workdir / "configs" / "bad.yaml").write_text(text)
    before = (workdir / "params.yaml").read_bytes()
    assert main(["preset", "configs/bad.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert (workdir / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in workdir.iterdir()) == ["configs", "params.yaml"]
