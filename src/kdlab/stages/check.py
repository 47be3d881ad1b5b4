"""DVC stage `check`: validate all of params.yaml before any other stage runs.

DVC deletes a stage's outputs just before running it, so a stage that refuses its params has
already destroyed the last good results. Every other stage depends on this stage's output,
which is the same bytes whenever the params are valid: an invalid value stops `dvc repro` and
`dvc exp run` here, with every output untouched, and a valid change reruns nothing by itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, run_stage

log = logging.getLogger("kdlab.check")

OK_TEXT = "params.yaml passed kdlab check\n"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="written only when valid")
    parser.add_argument("--pipeline", type=Path, default=Path("dvc.yaml"),
                        help="the dvc.yaml whose params and outputs are preflighted")  # fmt: skip


def body(run: StageRun) -> None:
    from kdlab.config import read_params_file
    from kdlab.errors import ConfigError
    from kdlab.fsutil import write_bytes_atomic
    from kdlab.preflight import preflight, restore_advice
    from kdlab.runclaim import write_claim
    from kdlab.validate import check_raw

    args = run.args
    root = args.pipeline.resolve().parent
    raw = read_params_file(args.params)
    try:
        params = check_raw(raw, grid_points=False, device=True)
    except ConfigError as exc:  # say how to undo what DVC did before this stage, if anything
        raise ConfigError(f"{exc}{restore_advice(root, raw, args.pipeline)}") from None
    preflight(raw, params, root, args.pipeline)
    write_claim(args.params)  # the stages after this one train on exactly this file
    write_bytes_atomic(args.out, OK_TEXT.encode())
    log.info("%s is valid (every section, the KD methods, layers, the device); every output "
             "can be replaced and the disk has room", args.params)  # fmt: skip


def main(argv=None) -> int:
    return run_stage("check", add_args, body, argv, load=None)  # validates the file itself


if __name__ == "__main__":
    sys.exit(main())
