"""Sizes from params (`<role>.size`): a preset's hyper-parameters overridden, refused in one line
where they make no network, carried in the checkpoint so extraction rebuilds the same model, and
absent from a preset's checkpoint (whose bytes stay what they were)."""

from __future__ import annotations

import pytest
import torch

from kdlab.architectures import arch_label, check_size, feature_shapes
from kdlab.config import params_from_dict
from kdlab.errors import ConfigError
from kdlab.models import make_model, probe_shapes

from ..conftest import tiny_params

SIZE = {"dim": 48, "heads": 6, "encoder_layers": 4, "decoder_layers": 1, "ff_dim": 96,
        "position": "sinusoidal"}  # fmt: skip


def test_a_sized_model_is_built_as_its_computed_shapes_say():
    model = make_model("spoter_small", 12, 9, 29, SIZE)
    assert len(model.encoder) == 4 and len(model.decoder) == 1
    assert model.encoder[0].self_attn.num_heads == 6 and model.fc.in_features == 48
    assert model.encoder[0].ff.linear1.out_features == 96 and model.position == "sinusoidal"
    computed = feature_shapes("spoter_small", 9, (29, 12), SIZE)
    probed = probe_shapes(model, 12, 29, width=None)
    assert probed.stages == computed.stages and probed.embedding_dim == computed.embedding_dim
    assert computed.attention_heads == (6,) * 5
    preset = make_model("spoter_small", 12, 9, 29)
    assert len(preset.encoder) == 3 and preset.fc.in_features == 64


@pytest.mark.parametrize(("arch", "size", "said"), [
    ("spoter_small", {"dim": 96, "heads": 5},
     "teacher.size.heads 5 must divide teacher.size.dim 96"),
    ("spoter_small", {"depth": 3}, "teacher.size.depth is not a size of spoter_small: valid keys "
                                   "are dim, heads, encoder_layers, decoder_layers, ff_dim"),
    ("spoter_small", {"dim": 96.5}, "teacher.size.dim must be an integer"),
    ("spoter_small", {"dim": 0}, r"teacher.size.dim must be in \[1, 65536\], got 0"),
    ("spoter_small", {"dropout": float("nan")}, "teacher.size.dropout must be a finite number"),
    ("spoter_small", {"position": "rotary"}, "teacher.size.position must be one of learned, "
                                             "sinusoidal, constant, got 'rotary'"),
    ("spoter_small", {"spoter_decoder": 1}, "teacher.size.spoter_decoder must be true or false"),
    ("resnet20", {"depth": 32}, "resnet20's size is fixed by its name; sizes from params are "
                                "for spoter models"),
])  # fmt: skip
def test_bad_sizes_are_one_line_naming_the_field(arch, size, said):
    with pytest.raises(ConfigError, match=said) as caught:
        check_size("teacher.size", arch, size)
    assert "\n" not in str(caught.value)


def test_params_validate_sizes_and_a_preset_keeps_its_metadata():
    raw = tiny_params(**{"data.name": "seq_motifs", "teacher.arch": "spoter_small",
                         "student.arch": "spoter_tiny", "kd.method": "logit",
                         "teacher.size": {"dim": 96, "heads": 6}})  # fmt: skip
    params = params_from_dict(raw)
    assert params.section("teacher")["size"] == {"dim": 96, "heads": 6}
    assert "size" not in params.section("student")  # a preset's section, as before sizes
    with pytest.raises(ConfigError, match=r"student.size must be \{\} when student.arch is none"):
        params_from_dict(
            {
                **raw,
                "student": {**raw["student"], "arch": "none", "size": {"dim": 8}},
                "kd": {"method": "none"},
            }
        )
    assert arch_label("spoter_small", {"heads": 6, "dim": 96}) == "spoter_small{dim=96,heads=6}"
    assert arch_label("spoter_small", {}) == "spoter_small"


def test_the_teacher_stage_trains_the_sized_model_and_load_model_rebuilds_it(tmp_path):
    from kdlab.data.datasets import prepare_dataset
    from kdlab.stages import train_teacher
    from kdlab.training.checkpoint import load_checkpoint, load_model

    from ..conftest import write_params

    data = tmp_path / "data" / "seq_motifs"
    prepare_dataset("seq_motifs", data)
    params = tiny_params(**{"data.name": "seq_motifs", "teacher.arch": "spoter_tiny",
                            "student.arch": "none", "kd.method": "none", "teacher.epochs": 1,
                            "teacher.save_epochs": [], "teacher.size": SIZE})  # fmt: skip
    write_params(tmp_path / "params.yaml", params)
    argv = ["--params", str(tmp_path / "params.yaml"), "--data", str(data), "--model-dir",
            str(tmp_path / "models/teacher"), "--metrics-dir", str(tmp_path / "metrics/teacher"),
            "--resume", str(tmp_path / "checkpoints/teacher/resume.pt")]  # fmt: skip
    assert train_teacher.main(argv) == 0
    path = tmp_path / "models/teacher/model.pt"
    payload = load_checkpoint(path, "kdlab.model/1")
    assert payload["size"] == SIZE and payload["params"]["teacher"]["size"] == SIZE
    model, _ = load_model(path, torch.device("cpu"))
    assert len(model.encoder) == 4 and model.fc.in_features == 48
    assert all(torch.equal(model.state_dict()[k], v) for k, v in payload["state_dict"].items())


HOSTILE = [float("nan"), float("inf"), -1, 0, 2**70, 1.5, "", "x" * 500, None, [], {}, True]


@pytest.mark.parametrize("key", ["dim", "heads", "encoder_layers", "decoder_layers", "ff_dim",
                                 "dropout", "position", "spoter_decoder"])  # fmt: skip
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_every_size_refuses_hostile_values_in_one_line_naming_it(key, value):
    raw = tiny_params(**{"data.name": "seq_motifs", "teacher.arch": "spoter_small",
                         "student.arch": "none", "kd.method": "none",
                         "teacher.size": {key: value}})  # fmt: skip
    try:
        params_from_dict(raw)
    except ConfigError as exc:
        assert f"teacher.size.{key}" in str(exc) and "\n" not in str(exc), str(exc)
    else:  # accepted: only values that make a network (dropout 0, SPOTER's decoder on)
        assert (key, value) in (("dropout", 0), ("spoter_decoder", True)), (key, value)
