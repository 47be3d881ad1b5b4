"""DVC stage `extract`: cache teacher and student activations (and milestones) for analysis."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, run_stage
from kdlab.training.seeding import start_run

log = logging.getLogger("kdlab.extract")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--teacher-dir", type=Path, required=True, help="models/teacher")
    parser.add_argument("--student-dir", type=Path, required=True, help="models/student")
    parser.add_argument("--out", type=Path, required=True, help="activation cache to write")


def model_checkpoints(role: str, model_dir: Path, milestones: bool) -> dict[str, Path]:
    """`role` -> model.pt, and `role@epoch_XXXX` -> each milestone checkpoint."""
    found = {role: model_dir / "model.pt"}
    if milestones:
        for path in sorted((model_dir / "milestones").glob("epoch_*.pt")):
            found[f"{role}@{path.stem}"] = path
    return found


def body(run: StageRun) -> None:
    from kdlab.checksum import sha256_file
    from kdlab.data.loader import load_dataset
    from kdlab.extract.activations import extract_all, sample_indices
    from kdlab.training.checkpoint import load_model

    args, params, device = run.args, run.params, run.device
    cfg = params.extract
    dataset = load_dataset(args.data)
    checkpoints = model_checkpoints("teacher", args.teacher_dir, cfg.milestones)
    if not params.one_model:  # a study of one model: the teacher stage's alone
        checkpoints |= model_checkpoints("student", args.student_dir, cfg.milestones)
    models = {}
    for name, path in checkpoints.items():
        model, payload = load_model(path, device)
        models[name] = (model, {"checkpoint": str(path), "sha256": sha256_file(path),
                                "arch": payload["arch"], "epoch": payload["epoch"]})  # fmt: skip
    indices = sample_indices(len(dataset.test), cfg.n_samples, params.seed)
    if len(indices) < cfg.n_samples:
        log.info("extract.n_samples %d > test split: using all %d", cfg.n_samples, len(indices))
    log.info("extracting %d models on %d test samples into %s", len(models), len(indices), args.out)
    meta = extract_all(
        models, dataset.test.to(device), dataset.meta["mean"], dataset.meta["std"], indices,
        list(cfg.layers) or None, args.out, cfg.dtype, cfg.batch_size, cfg.attention,
        dataset.meta["classes"],
    )  # fmt: skip
    log.info("wrote %d arrays to %s", len(meta["arrays"]), args.out)


def main(argv=None) -> int:
    return run_stage("extract", add_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
