"""DVC stage `train_student`: distil the student from the frozen teacher with `kd.method`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdlab.stages._common import add_training_args, run_stage, train_stage


def add_args(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model.pt")
    parser.add_argument("--paraphraser", type=Path, help="ft's paraphraser (train_paraphraser)")


def main(argv=None) -> int:
    return run_stage("train_student", add_args, lambda a: train_stage("student", a), argv)


if __name__ == "__main__":
    sys.exit(main())
