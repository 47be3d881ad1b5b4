"""What every stage's entry point shares: logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from kdlab.errors import ConfigError, KdlabError


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_stage(
    name: str,
    build_parser: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace], None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments, run `body`; a KdlabError becomes one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(prog=f"python -m kdlab.stages.{name}")
    build_parser(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        body(args)
    except KdlabError as exc:
        print(f"kdlab {name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the training stages; dvc.yaml passes every path."""
    from pathlib import Path

    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--resume", type=Path, required=True, help="resume checkpoint path")


def train_stage(role: str, args: argparse.Namespace) -> None:
    """Load params, seed, read the dataset, train `role`; all the work is in kdlab.training."""
    from kdlab.data.loader import load_dataset
    from kdlab.distill import get_method, load_checked_params
    from kdlab.training.once import default_store_dir, run_once
    from kdlab.training.run import RoleOutputs, run_fingerprint, train_role
    from kdlab.training.seeding import configure_torch, resolve_device, seed_everything
    from kdlab.training.stop import stop_on_signal

    params = load_checked_params(args.params)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    configure_torch(device)
    dataset = load_dataset(args.data)
    outputs = RoleOutputs(args.model_dir, args.metrics_dir, args.resume)
    # Each method declares the files it needs (Distiller.artifacts); the stage passes those only,
    # so a method's resume fingerprint never depends on another method's files.
    needed = get_method(params.kd.method).cls.artifacts if role == "student" else ()
    artifacts = {name: getattr(args, name, None) for name in needed}
    missing = [name for name, path in artifacts.items() if path is None]
    if missing:
        raise ConfigError(
            f"kd.method {params.kd.method} needs --{missing[0]} (an earlier stage's output)"
        )
    teacher = getattr(args, "teacher", None)

    def train() -> None:
        with stop_on_signal():
            train_role(role, params, dataset, device, outputs, teacher, artifacts)

    if role != "teacher":
        train()
        return
    # Students differ per experiment; a teacher is shared by many, so it is trained once.
    fingerprint = run_fingerprint(role, params, dataset, device, None)
    outs = {"model": args.model_dir, "metrics": args.metrics_dir}
    run_once(default_store_dir(), fingerprint, outs, train)
