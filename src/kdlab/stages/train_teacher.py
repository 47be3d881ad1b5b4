"""DVC stage `train_teacher`: a pure (CE + label smoothing) teacher for one (dataset, seed)."""

from __future__ import annotations

import sys

from kdlab.stages._common import add_training_args, run_stage, train_stage


def main(argv=None) -> int:
    return run_stage("train_teacher", add_training_args, lambda a: train_stage("teacher", a), argv)


if __name__ == "__main__":
    sys.exit(main())
