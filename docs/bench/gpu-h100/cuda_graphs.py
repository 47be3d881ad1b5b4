"""One-off measurement (2026-11-22, H100): the bench's bound for logit KD, compiled with
torch.compile's default mode and with mode="reduce-overhead" (CUDA graphs). Run from the
repository root on a CUDA machine: `OUT=. python docs/bench/gpu-h100/cuda_graphs.py`; writes
$OUT/graphs.json. It patches torch.compile for the bound only; kdlab's loop is not involved."""

import functools
import json
import os
import sys
import time

import torch

sys.path.insert(0, "src")
from kdlab.bench import train as bench

device = torch.device("cuda")
compile_default = torch.compile
out = os.environ["OUT"] + "/graphs.json"
results = {}
for label, mode in [("reduce-overhead", "reduce-overhead"), ("default", None)]:
    torch.compile = functools.partial(compile_default, mode=mode) if mode else compile_default
    cfg = bench.resolve_config("cifar", device)
    opts = bench.resolve_options(device, None, "on", "on")
    steps = max(cfg.steps, cfg.warmup, 8)
    train = bench.synthetic_split(steps * cfg.batch_size, cfg, device, 0)
    start = time.time()
    ips = bench.measure_bound(cfg, "logit", train, opts)
    results[label] = {"bound_ips": ips, "seconds_incl_compile": time.time() - start}
    print(label, results[label], flush=True)
    with open(out, "w") as handle:
        handle.write(json.dumps(results, indent=1))
