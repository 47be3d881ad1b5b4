"""Top-k samples per latent: each sample at most once, ties by sample index, any block size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.analysis.sae import SparseAutoencoder
from kdlab.errors import DataError
from kdlab.extract.shards import ShardSet, ShardWriter, write_metadata
from kdlab.sae.topk import sample_blocks, top_k_examples, write_table
from kdlab.sae.train import Normalizer


def shards_of(path, values, samples, tokens, shard_rows=7):
    path.mkdir(exist_ok=True)
    writer = ShardWriter(path, values.shape[1], "float32", shard_rows)
    writer.add(values.astype(np.float32), np.asarray(samples), np.asarray(tokens))
    write_metadata(path, layer="x", d=values.shape[1], dtype="float32", rows=writer.rows,
                   shards=writer.close())  # fmt: skip
    return ShardSet(path)


def identity_sae(d):
    """f = ReLU(x): each latent reads one coordinate, so the rows are the activations."""
    sae = SparseAutoencoder(d, d)
    with torch.no_grad():
        sae.w_enc.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval(), Normalizer(torch.zeros(d), 1.0)


def brute_force(values, samples, tokens, k):
    """Per latent: each sample's max token, ranked by value (desc) then sample, then token."""
    out = []
    for latent in range(values.shape[1]):
        best = {}
        for v, s, t in zip(values[:, latent], samples, tokens, strict=True):
            if v > 0 and (s not in best or v > best[s][0] or (v == best[s][0] and t < best[s][1])):
                best[s] = (v, t)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        out += [(latent, rank, s, t, np.float32(v)) for rank, (s, (v, t)) in enumerate(ranked)]
    return out


def rows_of(table):
    return list(zip(*(table[c].tolist() for c in ("latent", "rank", "sample", "token", "value")),
                    strict=True))  # fmt: skip


def test_a_sample_holding_a_latents_two_strongest_tokens_appears_once(tmp_path):
    values = np.zeros((9, 1))
    values[[1, 2], 0] = [9.0, 8.0]  # sample 0's tokens 1 and 2: the two strongest
    values[4, 0], values[7, 0] = 5.0, 6.0  # samples 1 and 2
    samples, tokens = np.repeat([0, 1, 2], 3), np.tile([0, 1, 2], 3)
    sae, norm = identity_sae(1)
    table = top_k_examples(sae, norm, shards_of(tmp_path, values, samples, tokens), k=3)
    assert rows_of(table) == [(0, 0, 0, 1, 9.0), (0, 1, 2, 1, 6.0), (0, 2, 1, 1, 5.0)]


@pytest.mark.parametrize(("block_rows", "latent_chunk"), [(1, 1), (5, 3), (64, 1024), (10_000, 2)])
def test_equals_the_brute_force_ranking_for_any_block(tmp_path, block_rows, latent_chunk):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, size=40)  # 1-5 tokens per sample
    samples = np.repeat(np.arange(40), counts)
    tokens = np.concatenate([np.arange(c) for c in counts])
    values = np.round(rng.standard_normal((len(samples), 6)), 1)  # rounded: many ties
    values[:, 5] = -1.0  # a latent that never fires: no rows
    sae, norm = identity_sae(6)
    shards = shards_of(tmp_path, values, samples, tokens)
    table = top_k_examples(sae, norm, shards, k=4, block_rows=block_rows,
                           latent_chunk=latent_chunk)  # fmt: skip
    assert rows_of(table) == brute_force(values.astype(np.float32), samples, tokens, 4)
    assert 5 not in table["latent"]
    for latent in range(5):  # no sample twice for a latent
        picked = table["sample"][table["latent"] == latent]
        assert len(set(picked.tolist())) == len(picked)


def test_the_table_file_is_the_same_bytes_every_time(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((50, 3))
    shards = shards_of(tmp_path / "a", values, np.arange(50) // 2, np.arange(50) % 2)
    sae, norm = identity_sae(3)
    write_table(top_k_examples(sae, norm, shards, k=5), tmp_path / "one.csv")
    write_table(top_k_examples(sae, norm, shards, k=5, block_rows=3), tmp_path / "two.csv")
    text = (tmp_path / "one.csv").read_text()
    assert text == (tmp_path / "two.csv").read_text()
    assert text.splitlines()[0] == "latent,rank,sample,token,value" and len(text.splitlines()) > 5


def test_blocks_are_cut_where_samples_begin():
    samples = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3])
    assert list(sample_blocks(samples, 2)) == [(0, 3), (3, 8), (8, 9)]  # at least 2 rows each
    assert list(sample_blocks(samples, 100)) == [(0, 9)]
    with pytest.raises(DataError, match="not grouped by sample"):
        list(sample_blocks(np.array([0, 1, 0]), 2))
