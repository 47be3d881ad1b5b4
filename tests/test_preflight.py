"""The check stage's preflight (kdlab.preflight) in-process: the parameter counts its disk
estimate rests on, and the paths it checks (the real-DVC refusals are in test_refuse.py)."""

from __future__ import annotations

import re

import pytest

from kdlab.architectures import arch_names
from kdlab.config import read_params_file
from kdlab.errors import ConfigError
from kdlab.preflight import (
    _param_count,
    check_params_present,
    load_stages,
    stage_output_paths,
)

from .conftest import REPO_ROOT


@pytest.mark.parametrize("arch", arch_names())
def test_the_estimated_parameter_count_is_close_to_the_built_network(arch):
    """Within -15 % .. +30 % (shallow nets' first blocks are narrower than counted): the disk
    estimate is generous, never far off."""
    from kdlab.models import make_model

    built = sum(p.numel() for p in make_model(arch, 3, 100, 32).parameters())
    assert 0.85 * built <= _param_count(arch) <= 1.3 * built, (_param_count(arch), built)


def test_every_output_and_resume_checkpoint_of_dvc_yaml_is_checked():
    raw = read_params_file(REPO_ROOT / "params.yaml")
    paths = stage_output_paths(load_stages(REPO_ROOT / "dvc.yaml"), raw)
    for expected in ("data/.params-checked", "data/digits", "models/teacher", "models/student",
                     "metrics/student/metrics.json", "plots/figures", "data/activations",
                     "checkpoints/teacher/resume.pt", "checkpoints/student/resume.pt"):  # fmt: skip
        assert expected in paths


def test_a_key_a_stage_reads_must_be_in_params_yaml():
    stages = load_stages(REPO_ROOT / "dvc.yaml")
    raw = read_params_file(REPO_ROOT / "params.yaml")
    check_params_present(raw, stages)
    del raw["kd"]["ft"]["rate"]
    message = "params.yaml has no kd.ft.rate, which stage train_paraphraser of dvc.yaml reads"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_params_present(raw, stages)
