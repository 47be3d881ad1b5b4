"""Atomic checkpoints: a crash mid-write never leaves a broken file in place."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdlab.errors import CheckpointError
from kdlab.training import checkpoint
from kdlab.training.checkpoint import load_checkpoint, save_checkpoint

from ..conftest import tool_env


def payload(value: float, size: int = 1000) -> dict:
    return {"format": "test/1", "weights": torch.full((size,), value), "epoch": int(value)}


def test_round_trip(tmp_path):
    save_checkpoint(payload(3.0), tmp_path / "a.pt")
    loaded = load_checkpoint(tmp_path / "a.pt", "test/1")
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], torch.full((1000,), 3.0))


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(payload(1.0), path)

    def crashing_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip file")
        raise OSError("killed mid-write")

    monkeypatch.setattr(checkpoint.torch, "save", crashing_save)
    with pytest.raises(OSError, match="killed mid-write"):
        save_checkpoint(payload(2.0), path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


WRITER = """
import sys, torch
from kdlab.training.checkpoint import save_checkpoint
path = sys.argv[1]
i = 0
while True:
    i += 1
    weights = torch.full((30_000_000,), float(i))
    save_checkpoint({"format": "test/1", "epoch": i, "weights": weights}, path)
    print(i, flush=True)
"""


def test_sigkill_during_writes_never_corrupts(tmp_path):
    """A real process killed (SIGKILL) at an arbitrary moment of a 120 MB write."""
    path = tmp_path / "big.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=tool_env()
    )
    assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
    time.sleep(0.3)  # now (most likely) in the middle of a later write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = load_checkpoint(path, "test/1")
    assert torch.equal(loaded["weights"], torch.full((30_000_000,), float(loaded["epoch"])))
    save_checkpoint(payload(9.0), path)  # the next save sweeps the killed writer's temp file
    assert [p.name for p in tmp_path.iterdir()] == ["big.pt"]


def test_truncated_checkpoint_is_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(payload(1.0, size=100_000), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=re.escape("ckpt.pt is corrupt or unreadable")):
        load_checkpoint(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a kdlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(payload(1.0), tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match=re.escape("has format 'test/1', expected 'kdlab.model/1'")
    ):
        load_checkpoint(tmp_path / "other.pt", "kdlab.model/1")


class Arbitrary:
    """Any class outside torch's weights-only allowlist stands for arbitrary pickled code."""


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run arbitrary code on load is rejected."""
    path = tmp_path / "evil.pt"
    torch.save({"format": "test/1", "obj": Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle it") as refused:
        load_checkpoint(path)
    # one line, and never torch's advice to load it with weights_only=False
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
