"""Training streams from the shards: its memory does not grow with the activations' size."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kdlab.extract.shards import ShardWriter, write_metadata

pytestmark = pytest.mark.slow

# Run in a fresh process whose allocator returns what is freed (glibc: blocks over 64 KB are
# their own mappings, unmapped on free), so its anonymous resident memory is what is live.
TRAIN = r"""
import json, sys, threading, time
from pathlib import Path

from kdlab.config import SAETrainConfig
from kdlab.extract.shards import ShardSet
from kdlab.sae.train import train_sae_from_shards


def anon_bytes():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024


before = anon_bytes()
peak, done = [before], threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon_bytes())
        time.sleep(0.002)


thread = threading.Thread(target=sample, daemon=True)
thread.start()
shards = ShardSet(sys.argv[1])  # verifies every shard: a streaming pass
cfg = SAETrainConfig(expansion=1, batch_size=4096, epochs=1, norm_samples=20_000,
                     init_samples=4096, lr_warmup=10)
train_sae_from_shards(shards, cfg, seed=0)
done.set()
thread.join()
print(json.dumps({"grown": peak[0] - before}))
"""


def write_shards(path, rows, d=256, block=25_000):
    path.mkdir()
    writer = ShardWriter(path, d, "float32", 65_536)
    rng = np.random.default_rng(0)
    for start in range(0, rows, block):
        values = rng.standard_normal((block, d), dtype=np.float32)
        writer.add(values, np.arange(start, start + block) // 4, np.arange(block) % 4)
    write_metadata(path, layer="x", d=d, dtype="float32", rows=rows, shards=writer.close())
    return rows * d * 4


def grown_while_training(path) -> int:
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "PATH": "/usr/bin"}
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(path)], capture_output=True,
                          text=True, env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])["grown"]


def test_memory_does_not_grow_with_the_activations(tmp_path):
    """The same SAE on 128 MB and on 512 MB of shards: the larger set costs the process its
    row index and permutation (24 bytes a row), never its activations (1 KB a row). What both
    share (a step's tensors, BLAS buffers: ~100 MB at batch 4096) does not depend on the data."""
    small = write_shards(tmp_path / "small", 125_000)
    large = write_shards(tmp_path / "large", 500_000)
    grown_small = grown_while_training(tmp_path / "small")
    grown_large = grown_while_training(tmp_path / "large")
    mib = 2**20
    print(f"anonymous memory grew {grown_small / mib:.0f} MiB for {small / mib:.0f} MiB of "
          f"shards, {grown_large / mib:.0f} MiB for {large / mib:.0f} MiB")  # fmt: skip
    assert grown_large - grown_small < (large - small) / 8
    assert grown_large < large / 2
