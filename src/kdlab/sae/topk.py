"""Top-k activating samples per SAE latent over a whole split, each sample at most once.

A sample's activation of a latent is its strongest token's (when tokens are the unit, samples
are ranked by their max token, and the table names that token). Only positive activations count:
a latent that fires on fewer than k samples lists fewer. Ties are broken by the lower sample
index, then the lower token, so the table is a function of the data and the SAE alone.

The split is streamed in blocks cut at sample boundaries (a sample's tokens are never split
between blocks), which needs the rows of a sample to be contiguous, as kdlab's shards write
them; candidates are merged a chunk of latents at a time, so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch

from kdlab.analysis.sae import SparseAutoencoder
from kdlab.errors import DataError
from kdlab.extract.shards import ShardSet
from kdlab.sae.train import Normalizer

COLUMNS = ("latent", "rank", "sample", "token", "value")


def sample_blocks(sample_of_row: np.ndarray, block_rows: int):
    """(start, end) row ranges of at least `block_rows` rows (the last: the rest), each cut
    where a new sample begins."""
    n = len(sample_of_row)
    if n and np.any(np.diff(sample_of_row) < 0):
        raise DataError("the shards' rows are not grouped by sample (sample indices go down): "
                        "top-k examples need each sample's tokens together")  # fmt: skip
    bounds = np.r_[np.flatnonzero(np.diff(sample_of_row) != 0) + 1, n]  # where samples begin
    begin = 0
    while begin < n:
        cut = int(bounds[np.searchsorted(bounds, min(begin + block_rows, n))])
        yield begin, cut
        begin = cut


@torch.no_grad()
def top_k_examples(
    sae: SparseAutoencoder, norm: Normalizer, shards: ShardSet, k: int,
    block_rows: int = 4096, latent_chunk: int = 1024,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The table as columns (latent, rank, sample, token, value), sorted by latent then rank."""
    index = shards.index()
    sample_of_row, token_of_row = index[:, 0], index[:, 1]
    m = sae.b_enc.shape[0]
    values = np.full((m, k), -np.inf, dtype=np.float32)
    samples = np.full((m, k), -1, dtype=np.int64)
    tokens = np.full((m, k), -1, dtype=np.int64)
    for begin, end in sample_blocks(sample_of_row, block_rows):
        rows = np.arange(begin, end)
        f = sae.encode(norm(torch.from_numpy(shards.take(rows)))).numpy()  # (rows, m)
        block_samples = sample_of_row[begin:end]
        starts = np.flatnonzero(np.r_[True, np.diff(block_samples) != 0])
        best = np.maximum.reduceat(f, starts, axis=0)  # (groups, m): each sample's max token
        group_of_row = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(rows)]))
        at_best = f == best[group_of_row]
        token_grid = np.where(at_best, token_of_row[begin:end, None], np.iinfo(np.int64).max)
        best_token = np.minimum.reduceat(token_grid, starts, axis=0)  # the lowest such token
        group_samples = block_samples[starts]
        for lo in range(0, m, latent_chunk):
            hi = min(m, lo + latent_chunk)
            # Earlier candidates have lower sample indices than this block's samples, and are
            # sorted by value then sample: a stable sort by value keeps "lower sample first".
            merged_v = np.concatenate([values[lo:hi], best[:, lo:hi].T], axis=1)
            merged_s = np.concatenate(
                [samples[lo:hi], np.broadcast_to(group_samples, (hi - lo, len(starts)))], axis=1
            )
            merged_t = np.concatenate([tokens[lo:hi], best_token[:, lo:hi].T], axis=1)
            keep = np.argsort(-merged_v, axis=1, kind="stable")[:, :k]
            values[lo:hi] = np.take_along_axis(merged_v, keep, axis=1)
            samples[lo:hi] = np.take_along_axis(merged_s, keep, axis=1)
            tokens[lo:hi] = np.take_along_axis(merged_t, keep, axis=1)
    fired = values > 0
    latent, rank = np.nonzero(fired)
    return {"latent": latent.astype(np.int64), "rank": rank.astype(np.int64),
            "sample": samples[fired], "token": tokens[fired],
            "value": values[fired]}  # fmt: skip


def write_table(table: dict[str, np.ndarray], path) -> None:
    """A CSV: one line per (latent, rank), values to float32 precision (9 significant digits)."""
    lines = [",".join(COLUMNS)]
    lines += [f"{a},{b},{c},{d},{e:.9g}" for a, b, c, d, e in zip(
        *(table[name].tolist() for name in COLUMNS), strict=True)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
