"""What every stage's entry point shares: logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.fsutil import ENVIRONMENT_ERRNOS, describe_os_error


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
    """Parse arguments, run `body`; a KdlabError, Ctrl-C, a full disk or a read-only directory
    becomes one line on stderr and a non-zero exit status, never a traceback."""
    parser = argparse.ArgumentParser(prog=f"python -m kdlab.stages.{name}")
    build_parser(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        body(args)
    except KdlabError as exc:
        print(f"kdlab {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"kdlab {name}: interrupted (Ctrl-C); no output was written, and running the stage "
            "again resumes from the last complete epoch",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"kdlab {name}: error: {describe_os_error(exc, exc.filename)}", file=sys.stderr)
        return 2
    return 0


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the training stages; dvc.yaml passes every path."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--resume", type=Path, required=True, help="resume checkpoint path")
