"""DVC stage `train_sae`: one sparse autoencoder per layer of `data/shards`, streamed from disk.

Outputs, each complete or absent:
    models/sae/<layer>.pt          the SAE: weights, normalisation, its config and the sha256 of
                                   the shards it was trained on (kdlab.sae.train; verified on load)
    models/sae/<layer>.topk.csv    each latent's top `sae.top_k` samples of the whole split
                                   (latent, rank, sample, token, value; kdlab.sae.topk)
    metrics/sae/metrics.json       held-out metrics per layer: `dvc exp show` lists them
    models/sae/curves/<layer>/     DVCLive per-step curves (loss, MSE, L1, L0, dead so far), in
                                   the cached output (an empty directory when there is no SAE,
                                   which git could not carry as a plots output)
Resume checkpoints live in `--resume/<layer>.pt` (not DVC outputs, so DVC never deletes them): a
killed run continues where its last checkpoint was and ends with the same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, run_stage
from kdlab.training.seeding import start_run

log = logging.getLogger("kdlab.train_sae")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=Path, required=True, help="the shards stage's output")
    parser.add_argument("--out", type=Path, required=True, help="SAE directory to write")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics/sae/metrics.json")
    parser.add_argument("--resume", type=Path, required=True, help="resume checkpoint directory")


def write_curves(curves_dir: Path, layer: str, history: list) -> None:
    """One layer's per-step metrics through DVCLive, into `curves_dir/<layer>/`."""
    from dvclive import Live

    live = Live(dir=str(curves_dir / layer), save_dvc_exp=False, dvcyaml=None, report=None)
    for step, metrics in history:
        live.step = step
        for name, value in metrics.items():
            live.log_metric(f"train/{name}", value)
    live.end()


def body(run: StageRun) -> None:
    from kdlab.extract.shards import ShardSet, read_layer_list
    from kdlab.fsutil import atomic_directory, write_bytes_atomic
    from kdlab.sae.topk import top_k_examples, write_table
    from kdlab.sae.train import evaluate_sae, load_sae, save_sae, split_rows, train_sae_from_shards

    args, params = run.args, run.params
    cfg = params.sae
    layers = read_layer_list(args.shards)
    if not layers:
        log.info("no activation shards (shards.layers is empty): no SAE to train")
    metrics = {}
    with atomic_directory(args.out) as tmp:
        for layer in layers:
            shards = ShardSet(args.shards / layer)
            log.info("SAE on %s: %d rows of %d, %d latents", layer, shards.rows, shards.d,
                     cfg.expansion * shards.d)  # fmt: skip
            args.resume.mkdir(parents=True, exist_ok=True)
            payload = train_sae_from_shards(shards, cfg, params.seed, args.resume / f"{layer}.pt",
                                            device=run.device)  # fmt: skip
            save_sae(payload, tmp / f"{layer}.pt")
            sae, norm, payload = load_sae(tmp / f"{layer}.pt")  # what consumers will read
            _, heldout = split_rows(shards.sample_of_row(), cfg.heldout, params.seed)
            metrics[layer] = {"heldout": evaluate_sae(sae, norm, shards, heldout,
                                                      almost_dead=cfg.almost_dead,
                                                      dense=cfg.dense,
                                                      device=run.device)}  # fmt: skip
            write_curves(tmp / "curves", layer, payload["history"])
            write_table(top_k_examples(sae, norm, shards, cfg.top_k), tmp / f"{layer}.topk.csv")
            log.info("%s held out: FVE %.4f, L0 %.1f, dead %.3f", layer,
                     metrics[layer]["heldout"]["fve"], metrics[layer]["heldout"]["l0"],
                     metrics[layer]["heldout"]["dead"])  # fmt: skip
    write_bytes_atomic(args.metrics, (json.dumps(metrics, indent=2) + "\n").encode())
    for layer in layers:
        (args.resume / f"{layer}.pt").unlink(missing_ok=True)


def main(argv=None) -> int:
    return run_stage("train_sae", add_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
