"""A model trained elsewhere as the teacher stage's network: SPOTER's own weights give SPOTER's
own outputs in kdlab's family; a wrong file is refused in one line; the stage imports, never
trains."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from kdlab.data.datasets import prepare_dataset
from kdlab.errors import CheckpointError
from kdlab.models import make_model
from kdlab.training.checkpoint import load_checkpoint
from kdlab.training.external import load_external

from ..conftest import tiny_params, write_params


class SpoterDecoderLayer(nn.TransformerDecoderLayer):
    """SPOTER's decoder layer, as its repository writes it (spoter/spoter_model.py)."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout, activation):
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation)
        del self.self_attn

    def forward(self, tgt, memory, *args, **kwargs):
        tgt = tgt + self.dropout1(tgt)
        tgt = self.norm1(tgt)
        tgt2 = self.multihead_attn(tgt, memory, memory)[0]
        tgt = tgt + self.dropout2(tgt2)
        tgt = self.norm2(tgt)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        tgt = tgt + self.dropout3(tgt2)
        return self.norm3(tgt)


class Spoter(nn.Module):
    """SPOTER (Bohacek & Hruz 2022) as its repository builds it, for the test only."""

    def __init__(self, num_classes: int, hidden_dim: int = 108):
        super().__init__()
        self.row_embed = nn.Parameter(torch.rand(50, hidden_dim))
        self.pos = nn.Parameter(self.row_embed[0].detach().clone().view(1, 1, hidden_dim))
        self.class_query = nn.Parameter(torch.rand(1, hidden_dim))
        self.transformer = nn.Transformer(hidden_dim, 9, 6, 6)
        self.linear_class = nn.Linear(hidden_dim, num_classes)
        self.transformer.decoder.layers = nn.ModuleList(
            [SpoterDecoderLayer(hidden_dim, 9, 2048, 0.1, "relu") for _ in range(6)]
        )

    def forward(self, frames_t54x2: torch.Tensor) -> torch.Tensor:
        h = frames_t54x2.flatten(start_dim=1).unsqueeze(1)  # (T, 1, 108)
        memory = self.transformer.encoder(self.pos + h)
        query = self.class_query.unsqueeze(0)  # (1, 1, 108)
        for layer in self.transformer.decoder.layers:
            query = layer(query, memory)
        query = self.transformer.decoder.norm(query)
        return self.linear_class(query.transpose(0, 1))[:, 0]  # (1, classes)


def save(state, path):
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_spoters_own_weights_give_spoters_own_outputs(tmp_path):
    torch.manual_seed(0)
    spoter = Spoter(num_classes=100).eval()
    path, sha = save(spoter.state_dict(), tmp_path / "spoter.pt")
    ours = load_external(path, sha, "spoter", 108, 100, 64).eval()
    frames = torch.randn(37, 54, 2)
    with torch.no_grad():
        expected = spoter(frames)
        got = ours(frames.flatten(1)[None])
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_a_wrong_file_is_one_line(tmp_path):
    model = make_model("spoter_small", 3, 4, 48)
    path, sha = save(model.state_dict(), tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"has sha256 .*, but external.sha256 is 0{64}"):
        load_external(path, "0" * 64, "spoter_small", 3, 4, 48)
    with pytest.raises(CheckpointError, match=r"does not fit teacher.arch spoter_tiny: it "):
        load_external(path, sha, "spoter_tiny", 3, 4, 48)
    with pytest.raises(CheckpointError, match=r"gives pos shape \(48, 64\), spoter_small on "
                       r"this data needs \(29, 64\)"):  # fmt: skip
        load_external(path, sha, "spoter_small", 3, 4, 29)
    pickled, pickled_sha = save(model, tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(CheckpointError, match="refuses to unpickle it"):
        load_external(pickled, pickled_sha, "spoter_small", 3, 4, 48)
    scalars, scalars_sha = save({"epoch": 3}, tmp_path / "scalars.pt")
    with pytest.raises(CheckpointError, match="is not a state_dict"):
        load_external(scalars, scalars_sha, "spoter_small", 3, 4, 48)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_external(tmp_path / "nope.pt", sha, "spoter_small", 3, 4, 48)


def test_the_teacher_stage_imports_and_never_trains(tmp_path, monkeypatch, capsys, caplog):
    from kdlab.stages import train_teacher

    data = tmp_path / "data" / "seq_motifs"
    prepare_dataset("seq_motifs", data)
    torch.manual_seed(3)
    trained = make_model("spoter_small", 3, 4, 48)
    path, sha = save({"state_dict": trained.state_dict()}, tmp_path / "elsewhere.pt")
    params = tiny_params(**{"data.name": "seq_motifs", "teacher.arch": "spoter_small",
                            "student.arch": "none", "kd.method": "none",
                            "external.path": str(path), "external.sha256": sha})  # fmt: skip
    write_params(tmp_path / "params.yaml", params)
    monkeypatch.chdir(tmp_path)
    argv = ["--data", str(data), "--model-dir", "models/teacher", "--metrics-dir",
            "metrics/teacher", "--resume", "checkpoints/teacher/resume.pt"]  # fmt: skip
    with caplog.at_level("INFO"):
        assert train_teacher.main(argv) == 0
    assert "nothing was trained" in caplog.text
    payload = load_checkpoint(tmp_path / "models/teacher/model.pt", "kdlab.model/1")
    assert payload["imported"] == {"path": str(path), "sha256": sha}
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in trained.state_dict().items())
    metrics = json.loads((tmp_path / "metrics/teacher/metrics.json").read_text())
    assert 0 <= metrics["test"]["acc"] <= 1 and not (tmp_path / "checkpoints").exists()
    write_params(
        tmp_path / "params.yaml", {**params, "external": {"path": str(path), "sha256": "1" * 64}}
    )
    assert train_teacher.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "external.sha256 is 1111" in err[0]


def test_a_relative_external_path_must_be_tracked_by_git(tmp_path):
    """A queued experiment runs in a copy of the repository: a relative path git does not
    track would not be there, so the check refuses it in one line naming the absolute path."""
    import subprocess

    from kdlab.config import params_from_dict
    from kdlab.errors import ConfigError
    from kdlab.preflight import check_external

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    torch.manual_seed(0)
    _, sha = save({"state_dict": make_model("spoter_small", 3, 4, 48).state_dict()},
                  repo / "model.pt")  # fmt: skip
    params = params_from_dict(tiny_params(**{
        "data.name": "seq_motifs", "teacher.arch": "spoter_small", "student.arch": "none",
        "kd.method": "none", "external.path": "model.pt", "external.sha256": sha}))  # fmt: skip
    with pytest.raises(ConfigError, match="is relative and not tracked by git") as caught:
        check_external(repo, params)
    assert str((repo / "model.pt").resolve()) in str(caught.value)
    assert "\n" not in str(caught.value)
    subprocess.run(["git", "add", "model.pt"], cwd=repo, check=True)
    check_external(repo, params)  # tracked: every copy of the repository has it
    absolute = params_from_dict(tiny_params(**{
        "data.name": "seq_motifs", "teacher.arch": "spoter_small", "student.arch": "none",
        "kd.method": "none", "external.path": str(repo / "model.pt"),
        "external.sha256": sha}))  # fmt: skip
    check_external(tmp_path, absolute)
