"""Progress a person sees: a bar per epoch (images/s, ETA) on a terminal, one line per epoch in
logs, nothing of the bars when stderr is a file (DVC's queue logs, SLURM)."""

from __future__ import annotations

import io
import logging
import re
import sys

import torch

from kdlab.analysis.sae import SAEConfig, train_sae
from kdlab.extract.activations import extract_all, sample_indices
from kdlab.models import make_model
from kdlab.progress import bar
from kdlab.stages import train_teacher

from ..extract.test_extract import tiny_split
from .test_resume import make_workdir, stage_args


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_counts_images_with_rate_and_eta_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    items = bar(range(5), "teacher epoch 1/3", total=5, unit="img", scale=64, leave=True)
    assert list(items) == [*range(5)]
    shown = sys.stderr.getvalue()
    assert "teacher epoch 1/3" in shown and "320/320" in shown and "img/s" in shown
    assert re.search(r"<\d\d:\d\d", shown)  # the ETA
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file
    assert list(bar(range(5), "x", total=5)) == [*range(5)]
    assert sys.stderr.getvalue() == ""


def test_training_shows_a_batch_bar_per_epoch_and_logs_one_line_per_epoch(
    tmp_path, digits_dir, monkeypatch, caplog
):
    work = make_workdir(tmp_path / "work")
    monkeypatch.setattr(sys, "stderr", Terminal())
    with caplog.at_level(logging.INFO):
        assert train_teacher.main(stage_args(work, digits_dir)) == 0
    shown = sys.stderr.getvalue()
    epochs = int(re.search(r"teacher epoch 1/(\d+)", shown).group(1))
    for epoch in range(1, epochs + 1):
        assert f"teacher epoch {epoch}/{epochs}" in shown
    assert "img/s" in shown
    lines = [
        r.getMessage() for r in caplog.records if re.match(r"teacher epoch \d+/", r.getMessage())
    ]
    assert len(lines) == epochs and "train loss" in lines[0] and "test loss" in lines[0]


def test_extraction_shows_a_bar_per_model(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    split = tiny_split()
    models = {role: (make_model("resnet8", 1, 10, 8).eval(), {"sha256": role})
              for role in ("teacher", "student")}  # fmt: skip
    extract_all(models, split, [0.5], [0.25], sample_indices(len(split), 21, seed=0), None,
                tmp_path / "acts", dtype="float32", batch_size=7)  # fmt: skip
    shown = sys.stderr.getvalue()
    # each bar is drawn at its start (tqdm redraws at most every 0.1 s, and clears it at the end)
    for role in ("teacher", "student"):
        assert f"extract {role}:   0%|          | 0/21 [00:00<?, ?img/s]" in shown, shown


def test_sae_fitting_shows_a_bar_over_its_epochs(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    acts = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    train_sae(acts, SAEConfig(expansion=2, l1=1e-3, epochs=3, batch_size=16), seed=0)
    shown = sys.stderr.getvalue()
    assert "SAE:   0%|          | 0/3 [00:00<?, ?epoch/s]" in shown, shown
