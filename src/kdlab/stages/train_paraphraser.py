"""DVC stage `train_paraphraser`: FT's paraphraser, trained once per teacher.

It depends on the teacher, the data and `kd.method` / `kd.ft.*` paraphraser params only, so
every ft experiment that shares a teacher (any alpha, any student) restores it from DVC's
run-cache. For any other kd.method it writes a small placeholder and trains nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlab.distill.registry import load_checked_params
from kdlab.stages._common import StageRun, run_stage
from kdlab.training.seeding import start_run

log = logging.getLogger("kdlab.train_paraphraser")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model.pt")
    parser.add_argument("--out", type=Path, required=True, help="paraphraser checkpoint to write")


def body(run: StageRun) -> None:
    from kdlab.data.loader import load_dataset
    from kdlab.distill.ft import PARAPHRASER_FORMAT, train_paraphraser
    from kdlab.training.checkpoint import save_checkpoint
    from kdlab.training.run import load_frozen_teacher, make_loaders

    args, params, device = run.args, run.params, run.device
    if params.kd.method != "ft":
        log.info("kd.method is %s: no paraphraser needed, writing a placeholder", params.kd.method)
        save_checkpoint({"format": PARAPHRASER_FORMAT, "trained": False}, args.out)
        return
    dataset = load_dataset(args.data)
    teacher, teacher_sha = load_frozen_teacher(args.teacher, device)
    # The teacher's batch size: this stage must not depend on student params.
    train_loader, _ = make_loaders(params.teacher, params, dataset, device)
    ft = params.kd.options["ft"]
    log.info("training the ft paraphraser for %d epochs (rate %g)", ft.paraphraser_epochs, ft.rate)
    paraphraser, recon_mse = train_paraphraser(teacher, train_loader, ft, device)
    log.info("paraphraser reconstruction MSE %.5f", recon_mse)
    payload = {
        "format": PARAPHRASER_FORMAT,
        "trained": True,
        "state_dict": paraphraser.state_dict(),
        "teacher_sha256": teacher_sha,
        "rate": ft.rate,
        "epochs": ft.paraphraser_epochs,
        "reconstruction_mse": recon_mse,
    }
    save_checkpoint(payload, args.out)


def main(argv=None) -> int:
    return run_stage("train_paraphraser", add_args, body, argv, load=load_checked_params,
                     start=start_run)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
