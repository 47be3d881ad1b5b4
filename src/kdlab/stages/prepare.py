"""DVC stage `prepare`: build the dataset named by `data.name` into data/<name>/."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlab.data.datasets import prepare_dataset
from kdlab.stages._common import StageRun, run_stage

log = logging.getLogger("kdlab.prepare")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    parser.add_argument(
        "--downloads", type=Path, required=True, help="kept downloads (a broken one resumes)"
    )


def body(run: StageRun) -> None:
    args, params = run.args, run.params
    log.info("preparing dataset %s into %s", params.data.name, args.out)
    meta = prepare_dataset(params.data.name, args.out, args.downloads, params.data.mirror,
                           params.data.train_subset)  # fmt: skip
    shape = meta.get("image_shape") or meta["sequence_shape"]  # (H, W, C) or (T_max, C)
    log.info("wrote %s: %s samples, shape %s", args.out, meta["splits"], shape)


def main(argv=None) -> int:
    return run_stage("prepare", add_args, body, argv)


if __name__ == "__main__":
    sys.exit(main())
