"""DVC stage `train_teacher`: a pure (CE + label smoothing) teacher for one (dataset, seed).

It reads no `kd` param and imports no KD method, so editing a KD method never retrains a
teacher. A teacher is shared by many experiments, so it is trained once
(kdlab.training.shared_teacher).
"""

from __future__ import annotations

import sys

from kdlab.stages._common import StageRun, add_training_args, run_stage
from kdlab.training.seeding import start_run


def body(run: StageRun) -> None:
    from kdlab.data.loader import load_dataset
    from kdlab.training.run import RoleOutputs, run_fingerprint, teacher_setup, train_role
    from kdlab.training.shared_teacher import default_store_dir, run_once
    from kdlab.training.stop import stop_on_signal

    args, params, device = run.args, run.params, run.device
    dataset = load_dataset(args.data)
    outputs = RoleOutputs(args.model_dir, args.metrics_dir, args.resume)
    setup = teacher_setup(params, dataset)

    def train() -> None:
        with stop_on_signal():
            train_role("teacher", params, dataset, device, outputs, setup)

    fingerprint = run_fingerprint("teacher", params, dataset, device, setup)
    run_once(default_store_dir(), fingerprint,
             {"model": args.model_dir, "metrics": args.metrics_dir}, train)  # fmt: skip


def main(argv=None) -> int:
    return run_stage("train_teacher", add_training_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
