"""Stop training cleanly on SIGUSR1/SIGTERM (what SLURM sends before walltime or preemption)
and SIGINT (Ctrl-C).

The handler only sets a flag; the loop checks it between batches and raises `StopTraining`, so
the stop never lands in the middle of an optimizer step or a checkpoint write. The resume
checkpoint of the last complete epoch is already on disk (it is written after every epoch), and
the next run of the stage resumes from it with the same result as an uninterrupted run.

While training runs, its pid is written to `$KDLAB_STOP_PIDFILE` (when set), so a SLURM batch
script can forward its own signal to the training process and to nothing else: DVC itself would
die on SIGUSR1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from kdlab.errors import KdlabError

log = logging.getLogger(__name__)

PIDFILE_ENV = "KDLAB_STOP_PIDFILE"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
_requested: list[str] = []


class StopTraining(KdlabError):
    """Training was asked to stop by a signal; its last complete epoch is checkpointed."""


def check() -> None:
    """Raise StopTraining if a stop signal arrived (called between batches)."""
    if _requested:
        raise StopTraining(
            f"stopped by {_requested[0]}; no output was written (the resume checkpoint holds the "
            "last complete epoch), and running the stage again resumes from it"
        )


def _handler(signum: int, _frame) -> None:
    if not _requested:
        log.warning("received %s: stopping at the next batch", signal.Signals(signum).name)
    _requested.append(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signal() -> Iterator[None]:
    """Within the block, SIGUSR1/SIGTERM make `check()` raise; handlers are restored after."""
    _requested.clear()
    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    pidfile = Path(os.environ[PIDFILE_ENV]) if os.environ.get(PIDFILE_ENV) else None
    if pidfile is not None:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested.clear()
