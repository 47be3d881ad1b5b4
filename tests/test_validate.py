"""`kdlab check`, `kdlab grid queue` and `kdlab slurm submit` refuse what the stages would later
reject or silently degrade, naming the field (and the grid point), before anything is queued."""

from __future__ import annotations

import re

import pytest

from kdlab.cli import main
from kdlab.errors import ConfigError
from kdlab.validate import check_file

from .conftest import tiny_params, write_params


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"extract.layers": ["stage9"]},
         "extract.layers[0] must be a layer of both the teacher (resnet8) and the student "
         "(resnet8): one of stage1, stage2, stage3, embedding; got 'stage9'"),
        ({"analyze.sae_layers": ["stage9"]},
         "analyze.sae_layers[0] must be an extracted layer of both networks: one of stage1, "
         "stage2, stage3, embedding; got 'stage9'"),
        ({"extract.layers": ["stage3"], "analyze.sae_layers": ["embedding"]},
         "analyze.sae_layers[0] must be an extracted layer of both networks: one of stage3; "
         "got 'embedding'"),
        # another method is active: -S kd.method=fitnets would still fail, so refuse it now
        ({"kd.method": "logit", "kd.fitnets.hint_layer": "stage4"},
         "kd.fitnets.hint_layer must be a teacher stage (stage1, stage2, stage3), got 'stage4'"),
        ({"grid": None}, "grid must be a mapping with datasets, methods, alphas, seeds"),
        ({"student.arch": "vit_tiny", "kd.method": "logit",
          "grid": {"methods": ["at"], "alphas": [0.5], "seeds": [0]}},
         "grid point digits-at-a0.5-s0 (data.name=digits seed=0 kd.method=at kd.alpha=0.5): "
         "kd.method at needs convolutional feature maps"),
        ({"kd.logit.bogus": 1}, "kd.logit.bogus is not a known key"),
    ],
)  # fmt: skip
def test_check_refuses_what_a_stage_would(tmp_path, overrides, message):
    path = write_params(tmp_path / "params.yaml", tiny_params(**overrides))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_file(path)


def test_a_method_that_cannot_serve_the_pair_is_not_checked_unless_selected(tmp_path):
    """With a ViT student, at's params are irrelevant until at is selected (then refused)."""
    params = tiny_params(**{"student.arch": "vit_tiny", "kd.method": "logit", "grid": {
        "methods": ["logit", "rkd"], "alphas": [0.5], "seeds": [0]}})  # fmt: skip
    assert check_file(write_params(tmp_path / "params.yaml", params)).kd.method == "logit"


def test_cuda_device_must_be_visible_where_the_check_stage_runs(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_params(tmp_path / "params.yaml", tiny_params(device="cuda"))
    check_file(path, device=False)  # `kdlab check` on a login node without a GPU
    with pytest.raises(ConfigError, match="device is cuda but no CUDA device is visible"):
        check_file(path, device=True)


BAD_POINT = {"student.arch": "vit_tiny", "kd.method": "logit",
             "grid": {"methods": ["logit", "at"], "alphas": [0.5], "seeds": [0, 1]}}  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["check"], ["grid", "queue"], ["grid", "queue", "--dry-run"],
     ["slurm", "submit", "--dry-run"], ["slurm", "submit"]],
)  # fmt: skip
def test_commands_queue_nothing_when_one_grid_point_is_invalid(tmp_path, monkeypatch, capsys,
                                                               argv):  # fmt: skip
    write_params(tmp_path / "params.yaml", tiny_params(**BAD_POINT))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid point digits-at-a0.5-s0" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing queued
