"""Training streams from the shards: its memory does not grow with the activations' size."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kdlab.config import SAETrainConfig
from kdlab.extract.shards import ShardSet, ShardWriter, write_metadata
from kdlab.sae.train import train_sae_from_shards

pytestmark = pytest.mark.slow


def anon_bytes() -> int:
    """This process's anonymous resident memory (heap, not file pages a memmap maps in)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_training_on_shards_much_larger_than_its_memory_growth(tmp_path):
    rows, d, block = 1_000_000, 256, 50_000  # 1 GB of float32 activations, written in blocks
    writer = ShardWriter(tmp_path, d, "float32", 262_144)
    rng = np.random.default_rng(0)
    for start in range(0, rows, block):
        values = rng.standard_normal((block, d), dtype=np.float32)
        writer.add(values, np.arange(start, start + block) // 4, np.arange(block) % 4)
    write_metadata(tmp_path, layer="x", d=d, dtype="float32", rows=rows, shards=writer.close())
    data_bytes = rows * d * 4
    before = anon_bytes()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        shards = ShardSet(tmp_path)  # verifies every shard (a streaming pass)
        cfg = SAETrainConfig(expansion=1, batch_size=4096, epochs=1, norm_samples=20_000,
                             init_samples=4096, lr_warmup=10)  # fmt: skip
        payload = train_sae_from_shards(shards, cfg, seed=0)
    finally:
        done.set()
        sampler.join()
    assert payload["train_rows"] + payload["heldout_rows"] == rows
    grown = peak[0] - before
    # The row index and the permutation (24 MB), a step's tensors and what the allocator keeps
    # of freed blocks (~100 MB, with the batch size, not the data); never the activations (1 GB).
    assert grown < data_bytes / 4, f"anonymous memory grew {grown / 2**20:.0f} MiB"
