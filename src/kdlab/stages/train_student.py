"""DVC stage `train_student`: distil the student from the frozen teacher with `kd.method`.

With `student.arch: none` (a study of one model) there is no student: the stage writes its
declared outputs as markers that say so (an empty metrics.json, no plots) in well under a
second, without importing torch, and `extract` / `analyze` read the one model alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, add_training_args, run_stage

log = logging.getLogger("kdlab.train_student")

NO_STUDENT_FILE = "no-student.json"
"""What models/student holds in a study of one model."""


def add_args(parser: argparse.ArgumentParser) -> None:
    add_training_args(parser)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model.pt")
    parser.add_argument("--paraphraser", type=Path, help="ft's paraphraser (train_paraphraser)")


def load(path: Path):
    """params.yaml checked against the KD methods, unless there is no student to distil."""
    from kdlab.config import is_one_model, read_params_file

    if is_one_model(read_params_file(path)):
        from kdlab.config import load_params
        from kdlab.distill.specs import load_specs

        return load_params(path, methods=load_specs())  # torch-free
    from kdlab.distill.registry import load_checked_params

    return load_checked_params(path)


def write_no_student(args: argparse.Namespace) -> None:
    """The stage's outputs in a study of one model: markers, each written atomically."""
    from kdlab.fsutil import atomic_directory

    with atomic_directory(args.model_dir) as tmp:
        (tmp / NO_STUDENT_FILE).write_text(
            json.dumps({"student": "none", "why": "student.arch is none: a study of one model"})
            + "\n"
        )
    with atomic_directory(args.metrics_dir) as tmp:
        (tmp / "metrics.json").write_text("{}\n")
        (tmp / "plots" / "metrics").mkdir(parents=True)
    log.info("student.arch is none: a study of one model; wrote the no-student markers")


def body(run: StageRun) -> None:
    args, params = run.args, run.params
    if params.one_model:
        write_no_student(args)
        return
    from kdlab.data.loader import load_dataset
    from kdlab.distill.registry import get_method
    from kdlab.errors import ConfigError
    from kdlab.training.run import RoleOutputs, train_role
    from kdlab.training.seeding import start_run
    from kdlab.training.stop import stop_on_signal
    from kdlab.training.student import student_setup

    device = start_run(params.seed, params.device)
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
    # The body seeds and picks the device itself (kdlab.training.seeding.start_run) when there
    # is a student to train: a study of one model never imports torch here.
    return run_stage("train_student", add_args, body, argv, load=load)


if __name__ == "__main__":
    sys.exit(main())
