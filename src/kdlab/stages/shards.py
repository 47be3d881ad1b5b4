"""DVC stage `shards`: every token of one split through one model, as activation shards for SAEs.

`data/shards/layers.json` names the layers written (none when `shards.layers` is empty: then it
is the whole output, a placeholder the SAE stage reads as "nothing to train");
`data/shards/<layer>/` is one kdlab.extract.shards set per layer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, run_stage
from kdlab.training.seeding import start_run

log = logging.getLogger("kdlab.shards")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--model-dir", type=Path, required=True, help="models/<shards.model>")
    parser.add_argument("--out", type=Path, required=True, help="shard directory to write")


def body(run: StageRun) -> None:
    from kdlab.checksum import sha256_file
    from kdlab.extract.shards import write_layer_list
    from kdlab.fsutil import atomic_directory

    args, params, device = run.args, run.params, run.device
    cfg = params.shards
    if not cfg.layers:
        log.info("shards.layers is empty: no activations to write, writing a placeholder")
        with atomic_directory(args.out) as tmp:
            write_layer_list(tmp, [], {})
        return
    from kdlab.data.loader import load_dataset
    from kdlab.extract.stream import write_shards
    from kdlab.training.checkpoint import load_model

    dataset = load_dataset(args.data)
    path = args.model_dir / "model.pt"
    model, payload = load_model(path, device)
    info = {"role": cfg.model, "checkpoint": str(path), "sha256": sha256_file(path),
            "arch": payload["arch"], "epoch": payload["epoch"]}  # fmt: skip
    split = getattr(dataset, cfg.split)
    log.info("writing %s of %d %s samples (%s) into %s", ", ".join(cfg.layers), len(split),
             cfg.split, cfg.model, args.out)  # fmt: skip
    written = write_shards(
        model, split.to(device), cfg.split, dataset.meta["mean"], dataset.meta["std"],
        list(cfg.layers), args.out, shard_rows=cfg.shard_rows, dtype=cfg.dtype,
        batch_size=cfg.batch_size, model_info=info, seed=params.seed,
        finish=lambda tmp: write_layer_list(tmp, list(cfg.layers), info),
    )  # fmt: skip
    for layer, meta in written.items():
        log.info("%s: %d rows of %d (%s tokens a sample) in %d shards", layer, meta["rows"],
                 meta["d"], meta["tokens_per_sample"], len(meta["shards"]))  # fmt: skip


def main(argv=None) -> int:
    return run_stage("shards", add_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
