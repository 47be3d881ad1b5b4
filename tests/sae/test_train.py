"""SAE training streamed from shards: seeded order, exact resume, held-out rows, metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kdlab.errors import CheckpointError
from kdlab.extract.shards import ShardSet, ShardWriter, write_metadata
from kdlab.sae.train import (
    SAETrainConfig,
    evaluate_sae,
    geometric_median,
    load_sae,
    save_sae,
    split_rows,
    train_sae_from_shards,
)
from kdlab.training.checkpoint import checkpoint_bytes

CFG = SAETrainConfig(expansion=2, l1=1e-3, lr=3e-3, lr_warmup=5, l1_warmup=5, batch_size=32,
                     epochs=2, norm_samples=200, init_samples=100, heldout=0.2,
                     checkpoint_every=4)  # fmt: skip


def sparse_shards(path, samples=60, tokens=4, d=8, shard_rows=50, seed=0):
    """Rows that are sparse sums of a few fixed directions (something for an SAE to find)."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((16, d))
    codes = rng.random((samples * tokens, 16)) * (rng.random((samples * tokens, 16)) < 0.15)
    values = (codes @ atoms + 3.0).astype(np.float32)
    path.mkdir()
    writer = ShardWriter(path, d, "float32", shard_rows)
    writer.add(values, np.repeat(np.arange(samples), tokens), np.tile(np.arange(tokens), samples))
    write_metadata(path, layer="embedding", d=d, dtype="float32", rows=writer.rows,
                   shards=writer.close())  # fmt: skip
    return ShardSet(path)


def test_held_out_rows_are_whole_samples_drawn_from_the_seed():
    sample_of_row = np.repeat(np.arange(50), 3)
    train, held = split_rows(sample_of_row, 0.2, seed=0)
    assert len(held) == 30 and len(train) == 120
    assert not set(sample_of_row[train]) & set(sample_of_row[held])  # no sample on both sides
    assert np.array_equal(split_rows(sample_of_row, 0.2, seed=0)[1], held)
    assert not np.array_equal(split_rows(sample_of_row, 0.2, seed=1)[1], held)
    assert len(split_rows(sample_of_row, 0.0, seed=0)[1]) == 0


def test_geometric_median_is_robust_where_the_mean_is_not():
    x = torch.zeros(11, 2)
    x[10] = torch.tensor([1000.0, 0.0])  # one outlier
    assert geometric_median(x).norm() < 1e-3 < x.mean(dim=0).norm()


def test_same_seed_same_bytes_other_seed_other_sae(tmp_path):
    shards = sparse_shards(tmp_path / "acts")
    a = checkpoint_bytes(train_sae_from_shards(shards, CFG, seed=0))
    b = checkpoint_bytes(train_sae_from_shards(shards, CFG, seed=0))
    c = checkpoint_bytes(train_sae_from_shards(shards, CFG, seed=1))
    assert a == b and a != c


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at", [3, 8, 10])  # before any checkpoint, just before one, epoch 2
def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, stop_at):
    shards = sparse_shards(tmp_path / "acts")
    whole = checkpoint_bytes(train_sae_from_shards(shards, CFG, seed=0, log_every=1))
    resume = tmp_path / "resume.pt"

    def die(step, _metrics):
        if step == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sae_from_shards(shards, CFG, 0, resume, log_step=die, log_every=1)
    assert resume.exists() == (stop_at >= CFG.checkpoint_every)
    again = train_sae_from_shards(shards, CFG, 0, resume, log_every=1)
    assert checkpoint_bytes(again) == whole


def test_a_resume_file_of_another_run_is_refused(tmp_path):
    shards = sparse_shards(tmp_path / "acts")
    resume = tmp_path / "resume.pt"
    train_sae_from_shards(shards, CFG, 0, resume)
    other = dataclasses.replace(CFG, l1=2e-3)
    with pytest.raises(CheckpointError, match="belongs to another SAE run"):
        train_sae_from_shards(shards, other, 0, resume)


def test_normalised_rows_have_mean_norm_sqrt_d_and_the_sae_learns(tmp_path):
    shards = sparse_shards(tmp_path / "acts", samples=200)
    cfg = dataclasses.replace(CFG, epochs=6, norm_samples=10_000)
    payload = train_sae_from_shards(shards, cfg, seed=0)
    save_sae(payload, tmp_path / "sae.pt")
    sae, norm, loaded = load_sae(tmp_path / "sae.pt")
    train, held = split_rows(shards.index()[:, 0], cfg.heldout, 0)
    x = norm(torch.from_numpy(shards.take(train)))
    assert x.norm(dim=1).mean().item() == pytest.approx(8**0.5, rel=1e-4)
    assert loaded["train_rows"] == len(train) and loaded["heldout_rows"] == len(held) == 160
    metrics = evaluate_sae(sae, norm, shards, held)
    assert metrics["rows"] == 160 and metrics["fve"] > 0.8
    assert metrics["fve"] == pytest.approx(1 - metrics["nmse"])
    assert 0 < metrics["l0"] < 16 and 0 <= metrics["dead"] <= metrics["almost_dead"] <= 1


def test_evaluation_of_a_perfect_reconstruction(tmp_path):
    """An identity-like SAE (encoder = decoder = I, d_latent = d): MSE 0, FVE 1, every row's L0
    is its count of positive coordinates."""
    shards = sparse_shards(tmp_path / "acts")
    payload = train_sae_from_shards(shards, dataclasses.replace(CFG, expansion=1), seed=0)
    sae, norm, _ = load_sae_from(payload, tmp_path)
    with torch.no_grad():
        sae.w_enc.copy_(torch.eye(8))
        sae.w_dec.copy_(torch.eye(8))
        sae.b_enc.zero_()
        sae.b_dec.fill_(-100.0)  # every shifted coordinate is positive: f = x + 100
    rows = np.arange(shards.rows)
    metrics = evaluate_sae(sae, norm, shards, rows, block_rows=17)
    assert metrics["mse"] < 1e-9 and metrics["fve"] == pytest.approx(1.0)
    assert metrics["l0"] == 8 and metrics["dead"] == 0 and metrics["dense"] == 1


def load_sae_from(payload, tmp_path):
    save_sae(payload, tmp_path / "sae.pt")
    return load_sae(tmp_path / "sae.pt")


def test_a_damaged_sae_file_is_refused(tmp_path):
    shards = sparse_shards(tmp_path / "acts")
    save_sae(train_sae_from_shards(shards, CFG, seed=0), tmp_path / "sae.pt")
    data = bytearray((tmp_path / "sae.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "sae.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sae\.pt"):
        load_sae(tmp_path / "sae.pt")
