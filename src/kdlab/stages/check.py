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


def body(run: StageRun) -> None:
    from kdlab.fsutil import write_bytes_atomic
    from kdlab.validate import check_file

    args = run.args
    check_file(args.params, grid_points=False, device=True)
    write_bytes_atomic(args.out, OK_TEXT.encode())
    log.info("%s is valid (every section, the KD methods, layers, the device)", args.params)


def main(argv=None) -> int:
    return run_stage("check", add_args, body, argv, load=None)  # validates the file itself


if __name__ == "__main__":
    sys.exit(main())
