"""DVC stage `train_teacher`: a pure (CE + label smoothing) teacher for one (dataset, seed).

It reads no `kd` param and imports no KD method, so editing a KD method never retrains a
teacher. A teacher is shared by many experiments, so it is trained once
(kdlab.training.shared_teacher). With `external.path` the network is a model trained elsewhere,
imported (kdlab.training.external) and evaluated, not trained.
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
    if params.external.path:
        import_external(params, dataset, device, outputs)
        return
    setup = teacher_setup(params, dataset)

    def train() -> None:
        with stop_on_signal():
            train_role("teacher", params, dataset, device, outputs, setup)

    fingerprint = run_fingerprint("teacher", params, dataset, device, setup)
    run_once(default_store_dir(), fingerprint,
             {"model": args.model_dir, "metrics": args.metrics_dir}, train)  # fmt: skip


def import_external(params, dataset, device, outputs) -> None:
    """The teacher stage's outputs from a model trained elsewhere: model.pt (its weights, where
    they came from, its test accuracy here) and metrics/teacher, both written atomically."""
    import logging

    from kdlab.fsutil import atomic_directory
    from kdlab.training.checkpoint import MODEL_FORMAT, save_checkpoint
    from kdlab.training.external import load_external
    from kdlab.training.loop import evaluate
    from kdlab.training.run import arch_size, make_loaders, role_params, write_metrics

    ext, cfg = params.external, params.teacher
    model = load_external(ext.path, ext.sha256, cfg.arch, dataset.in_channels,
                          dataset.num_classes, dataset.image_size, cfg.size).to(device)  # fmt: skip
    _, test_loader = make_loaders(cfg, params, dataset, device)
    test = evaluate(model, test_loader, device)
    metrics = {"test/loss": test["loss"], "test/acc": test["acc"]}
    payload = {"format": MODEL_FORMAT, "role": "teacher", "arch": cfg.arch, **arch_size(cfg),
               "in_channels": dataset.in_channels, "num_classes": dataset.num_classes,
               "image_size": dataset.image_size, "state_dict": model.state_dict(),
               "distiller_state_dict": {}, "params": role_params("teacher", params),
               "epoch": 0, "metrics": metrics,
               "imported": {"path": ext.path, "sha256": ext.sha256}}  # fmt: skip
    with atomic_directory(outputs.model_dir) as tmp:
        save_checkpoint(payload, tmp / "model.pt")
    write_metrics(outputs.metrics_dir, [metrics])
    logging.getLogger("kdlab.train_teacher").info(
        "imported %s (%s, sha256 %s…) as the teacher stage's model: test acc %.4f; nothing was "
        "trained",
        ext.path,
        cfg.arch,
        ext.sha256[:12],
        test["acc"],
    )


def main(argv=None) -> int:
    return run_stage("train_teacher", add_training_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
