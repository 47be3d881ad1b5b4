"""The one entry point of every stage: arguments, params, seed and device, logging, one-line
errors. A stage module declares its arguments and its body; `run_stage` does the rest."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdlab.config import Params, load_params
from kdlab.errors import KdlabError
from kdlab.fsutil import ENVIRONMENT_ERRNOS, describe_os_error
from kdlab.runclaim import verify_claim


@dataclasses.dataclass(frozen=True)
class StageRun:
    """What a stage's body gets: its arguments, the validated params and the device."""

    args: argparse.Namespace
    params: Params | None
    """None for a stage that reads params.yaml its own way (check)."""
    device: Any = None
    """The torch.device (after seeding and torch's numerical flags); None without `start`."""


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
    body: Callable[[StageRun], None],
    argv: Sequence[str] | None = None,
    *,
    load: Callable[[Path], Params] | None = load_params,
    start: Callable[[int, str], Any] | None = None,
) -> int:
    """Parse the stage's arguments (and `--params`), load and validate params.yaml with `load`
    (kdlab.config.load_params; kdlab.distill.registry.load_checked_params for a stage that reads
    `kd`, which the teacher's must not import), then `start(seed, device)` for a stage that
    computes (kdlab.training.seeding.start_run: seeds, the device, torch's flags), then `body`.

    A KdlabError, Ctrl-C, a full disk or a read-only directory becomes one line on stderr and a
    non-zero exit status, never a traceback."""
    parser = argparse.ArgumentParser(prog=f"python -m kdlab.stages.{name}")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    build_parser(parser)
    args = parser.parse_args(argv)
    setup_logging()
    guarded = name != "check"  # check claims the run; every later stage keeps to its params
    try:
        with terminate_as_exception():
            if guarded:
                verify_claim(args.params, when="starts")
            params = load(args.params) if load is not None else None
            device = start(params.seed, params.device) if start is not None else None
            body(StageRun(args, params, device))
            if guarded:  # DVC records params.yaml as it is now: it must be what the stage used
                verify_claim(args.params, when="ends")
    except KdlabError as exc:
        print(f"kdlab {name}: error: {exc}{_restore(name, args.params)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        signame = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        again = (
            "running the stage again resumes from the last complete epoch"
            if name.startswith("train_")
            else "running the stage again starts it over (it keeps no partial work)"
        )
        print(f"kdlab {name}: interrupted ({signame}); no output was written, and {again}"
              f"{_restore(name, args.params)}", file=sys.stderr)  # fmt: skip
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"kdlab {name}: error: {describe_os_error(exc, exc.filename)}"
              f"{_restore(name, args.params)}", file=sys.stderr)  # fmt: skip
        return 2
    return 0


class Terminated(BaseException):
    """SIGTERM (a `kill`, or SLURM at walltime outside the training loop, which handles it in
    kdlab.training.stop): raised so every temp file's cleanup runs."""


@contextlib.contextmanager
def terminate_as_exception():
    def _raise(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _restore(stage: str, params_path: Path) -> str:
    """What brings back the outputs DVC removed before this stage failed (kdlab.pipeline)."""
    try:
        from kdlab.config import read_params_file
        from kdlab.pipeline import stage_restore_advice

        root = params_path.resolve().parent
        return stage_restore_advice(root, stage, read_params_file(params_path))
    except (OSError, ValueError, KdlabError):  # advice is a courtesy, never a traceback
        return ""


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the training stages; dvc.yaml passes every path."""
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--resume", type=Path, required=True, help="resume checkpoint path")
