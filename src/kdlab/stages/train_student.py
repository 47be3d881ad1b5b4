"""DVC stage `train_student`: distil the student from the frozen teacher with `kd.method`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdlab.distill.registry import load_checked_params
from kdlab.stages._common import StageRun, add_training_args, run_stage
from kdlab.training.seeding import start_run


def add_args(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model.pt")
    parser.add_argument("--paraphraser", type=Path, help="ft's paraphraser (train_paraphraser)")


def body(run: StageRun) -> None:
    from kdlab.data.loader import load_dataset
    from kdlab.distill.registry import get_method
    from kdlab.errors import ConfigError
    from kdlab.training.run import RoleOutputs, train_role
    from kdlab.training.stop import stop_on_signal
    from kdlab.training.student import student_setup

    args, params, device = run.args, run.params, run.device
    # Each method declares the files it needs (Distiller.artifacts); the stage passes those only,
    # so a method's resume fingerprint never depends on another method's files.
    needed = get_method(params.kd.method).cls.artifacts
    artifacts = {name: getattr(args, name, None) for name in needed}
    missing = [name for name, path in artifacts.items() if path is None]
    if missing:
        raise ConfigError(
            f"kd.method {params.kd.method} needs --{missing[0]} (an earlier stage's output)"
        )
    dataset = load_dataset(args.data)
    outputs = RoleOutputs(args.model_dir, args.metrics_dir, args.resume)
    setup = student_setup(params, dataset, device, args.teacher, artifacts)
    with stop_on_signal():
        train_role("student", params, dataset, device, outputs, setup)


def main(argv=None) -> int:
    return run_stage("train_student", add_args, body, argv, load=load_checked_params,
                     start=start_run)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
