"""Atomic checkpoints: written to a temp file in the same directory, fsync'ed, renamed into place.

A reader therefore sees either the previous complete file or the new complete file, never a
half-written one. Files are loaded with `torch.load(weights_only=True)`, so a checkpoint holds
only tensors and plain data (dicts, lists, str, numbers), never pickled code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from kdlab.errors import CheckpointError

MODEL_FORMAT = "kdlab.model/1"
RESUME_FORMAT = "kdlab.resume/1"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """torch.save `payload` to `path` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files of a writer that was killed mid-write (never a complete checkpoint)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a crash right after os.replace keeps the new file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, expected_format: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError, zip errors...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({reason})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a kdlab checkpoint")
    if expected_format is not None and payload["format"] != expected_format:
        raise CheckpointError(
            f"checkpoint {path} has format {payload['format']!r}, expected {expected_format!r}"
        )
    return payload
