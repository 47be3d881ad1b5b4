"""params.yaml validation: every bad input stops with one line naming the field."""

from __future__ import annotations

import subprocess

import pytest

from kdlab.architectures import arch_names
from kdlab.data.datasets import DATASETS
from kdlab.distill.registry import load_checked_params as load_params
from kdlab.distill.registry import params_from_dict
from kdlab.distill.specs import load_specs
from kdlab.errors import ConfigError

from .conftest import REPO_ROOT, VENV_BIN, default_params, tiny_params, tool_env, write_params

METHOD_NAMES = ", ".join(load_specs())
WITH_PARAMS = ", ".join(n for n, s in load_specs().items() if s.params_cls)

BAD_INPUTS = [
    ({"kd.alpha": 1.5}, "kd.alpha must be in [0, 1], got 1.5"),
    ({"kd.alpha": -0.1}, "kd.alpha must be in [0, 1], got -0.1"),
    ({"kd.alpha": "half"}, "kd.alpha must be a number, got 'half'"),
    ({"kd.method": "fitnetz"},
     f"kd.method must be one of {METHOD_NAMES}, got 'fitnetz'"),
    ({"kd.logit.temperature": 0}, "kd.logit.temperature must be in (0, 1000], got 0.0"),
    ({"kd.logit.temp": 4}, "kd.logit.temp is not a known key; valid keys: temperature, weight"),
    ({"kd.fitnetz": {}},
     "kd.fitnetz is not a known key (did you mean fitnets?); valid keys: method, alpha, "
     f"{WITH_PARAMS}"),
    ({"kd.rkd.angle_weight": -1}, "kd.rkd.angle_weight must be in [0, 1000000], got -1.0"),
    ({"kd.at.stages": "stage1"}, "kd.at.stages must be a list of strings, got 'stage1'"),
    ({"kd.ft.rate": 0}, "kd.ft.rate must be in (0, 4], got 0.0"),
    ({"kd.fitnets.hint_epochs": 1.5}, "kd.fitnets.hint_epochs must be an integer, got 1.5"),
    ({"teacher.arch": "resnet9"},
     f"teacher.arch must be one of {', '.join(arch_names())}, got 'resnet9'"),
    ({"teacher.epochs": 0}, "teacher.epochs must be in [1, 100000], got 0"),
    ({"teacher.epochs": 2.5}, "teacher.epochs must be an integer, got 2.5"),
    ({"student.batch_size": True}, "student.batch_size must be an integer, got True"),
    ({"student.lr": 0}, "student.lr must be in (0, 10], got 0.0"),
    ({"student.momentum": 1.0}, "student.momentum must be in [0, 1), got 1.0"),
    ({"student.schedule": "linear"},
     "student.schedule must be one of cosine, multistep, got 'linear'"),
    ({"student.schedule": "multistep"},
     "student.milestones must be non-empty when student.schedule is multistep"),
    ({"student.save_epochs": [2, 1]},
     "student.save_epochs must be strictly increasing, got [2, 1]"),
    ({"student.save_epochs": [5]}, "student.save_epochs[0] must be in [1, 3], got 5"),
    ({"student.label_smoothing": 1.0}, "student.label_smoothing must be in [0, 1), got 1.0"),
    ({"teacher.optimizer": "adam"}, "teacher.optimizer is not a known key; valid keys: arch, size, "
     "epochs, batch_size, eval_batch_size, lr, momentum, nesterov, weight_decay, schedule, "
     "milestones, gamma, label_smoothing, save_epochs, compile"),
    ({"student.compile": "yes"}, "student.compile must be true or false or one of auto, "
     "got 'yes'"),
    ({"data.name": "mnist"},
     f"data.name must be one of {', '.join(DATASETS)}, got 'mnist'"),
    ({"data.horizontal_flip": "yes"}, "data.horizontal_flip must be true or false or one of auto, "
     "got 'yes'"),
    ({"data.crop_padding": -1}, "data.crop_padding must be in [0, 64], got -1"),
    ({"seed": -3}, "seed must be in [0, 4294967295], got -3"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda, got 'tpu'"),
    ({"trainer": {}}, "trainer is not a known section; valid: seed, device, data, teacher, "
     "student, kd, extract, analyze, external, shards, sae, grid, slurm"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_rejected_with_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as excinfo:
        params_from_dict(tiny_params(**overrides))
    assert str(excinfo.value) == message
    assert "\n" not in str(excinfo.value)


def test_repository_params_are_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.kd.method in ("logit", "none")
    assert 0.0 <= params.kd.alpha <= 1.0


def test_config_is_frozen_and_typed():
    params = params_from_dict(tiny_params(**{"teacher.lr": 1}))
    assert isinstance(params.teacher.lr, float)
    assert params.teacher.save_epochs == (2,)
    with pytest.raises(AttributeError):
        params.kd.alpha = 0.9  # type: ignore[misc]


def test_missing_method_section_gets_defaults():
    raw = tiny_params()
    del raw["kd"]["logit"]
    params = params_from_dict(raw)
    assert params.kd.method_params.temperature == 4.0


def test_label_smoothing_only_for_the_pure_baseline():
    smoothing = {"student.label_smoothing": 0.1}
    assert (
        params_from_dict(tiny_params(**smoothing, **{"kd.method": "logit"})).student_label_smoothing
        == 0.0
    )
    assert (
        params_from_dict(tiny_params(**smoothing, **{"kd.method": "none"})).student_label_smoothing
        == 0.1
    )


def test_auto_augmentation_resolves_to_the_dataset_default():
    params = params_from_dict(tiny_params())
    assert params.data.resolved_horizontal_flip is False  # mirrored digits are other digits
    assert params.data.resolved_crop_padding == 1
    params = params_from_dict(tiny_params(**{"data.crop_padding": 0, "data.horizontal_flip": True}))
    assert (params.data.resolved_crop_padding, params.data.resolved_horizontal_flip) == (0, True)


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [0\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_params(path)


def _kdlab_check(params_path):
    return subprocess.run(
        [str(VENV_BIN / "kdlab"), "check", "--params", str(params_path)],  # the console script
        capture_output=True, text=True, env=tool_env(),
    )  # fmt: skip


def test_kdlab_check_exit_status(tmp_path):
    good = _kdlab_check(write_params(tmp_path / "good.yaml", default_params()))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = _kdlab_check(write_params(tmp_path / "bad.yaml", tiny_params(**{"kd.alpha": 1.5})))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "kdlab check: error: kd.alpha must be in [0, 1], got 1.5"
    assert "Traceback" not in bad.stderr


def test_kdlab_check_refuses_a_method_the_pair_cannot_serve(tmp_path):
    bad = tiny_params(**{"kd.method": "fitnets", "kd.fitnets.hint_layer": "stage4"})
    proc = _kdlab_check(write_params(tmp_path / "bad.yaml", bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kdlab check: error: kd.fitnets.hint_layer must be a teacher stage "
        "(stage1, stage2, stage3), got 'stage4'"
    )


def test_times_are_read_as_dvc_writes_them():
    """DVC (ruamel, YAML 1.2) writes `time: 20:00` unquoted; YAML 1.1 would read 1200."""
    from kdlab.schema import load_yaml

    assert load_yaml("time: 20:00\nn: 12\nx: 0.5\nh: 0x10\n") == {
        "time": "20:00", "n": 12, "x": 0.5, "h": 16}  # fmt: skip


def test_exponent_floats_without_a_dot_are_numbers():
    """1e-07 is how JSON and Python write 1e-7 (a YAML 1.2 float); YAML 1.1 would read a string,
    and a params file written by a script would be refused (`sae.almost_dead` was)."""
    from kdlab.schema import load_yaml

    assert load_yaml("a: 1e-07\nb: 2E+3\nc: -4e5\nd: 1e5x") == {"a": 1e-07, "b": 2000.0,
                                                                "c": -4e5, "d": "1e5x"}  # fmt: skip
