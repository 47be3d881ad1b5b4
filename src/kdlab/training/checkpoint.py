"""Checkpoints: self-verifying, byte-deterministic, written atomically.

Every checkpoint carries `content_sha256`, a checksum of its whole content (kdlab.checksum),
recomputed on load: a file with a flipped byte is refused with one line naming it and is never
used. The bytes are torch.save's serialisation of the payload, made in memory and written with a
temp file + fsync + rename, so a reader sees the previous complete file or the new complete one,
and the same payload always gives the same bytes (a resumed run's model.pt equals an
uninterrupted run's, so its DVC hash does not change for nothing). Files are loaded with
`torch.load(weights_only=True)`: a checkpoint holds only tensors and plain data, never code.
"""

from __future__ import annotations

import io
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from kdlab.checksum import payload_sha256
from kdlab.errors import CheckpointError
from kdlab.fsutil import write_bytes_atomic

MODEL_FORMAT = "kdlab.model/1"
RESUME_FORMAT = "kdlab.resume/1"
CHECKSUM_KEY = "content_sha256"


def canonical(value: Any) -> Any:
    """Fresh containers and interned strings: pickle memoises objects by identity, so the same
    content built in another way (e.g. a history loaded from a resume checkpoint) would
    otherwise serialise to other bytes."""
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, tuple):
        return tuple(canonical(v) for v in value)
    if type(value) is str:
        return sys.intern(value)
    return value


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes save_checkpoint writes for `payload` (its checksum added)."""
    content = canonical({k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    buffer = io.BytesIO()
    torch.save({**content, CHECKSUM_KEY: payload_sha256(content)}, buffer)
    return buffer.getvalue()


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write `payload` with its content checksum to `path` atomically."""
    write_bytes_atomic(path, checkpoint_bytes(payload))


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, i.e. running the file's code: never
        # repeated. "Unsupported global" = a class outside the allowlist; else damaged bytes.
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain data; kdlab "
                "refuses to unpickle it (it could run code)"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable (not a valid pickle)"
        ) from None
    except Exception as exc:  # RuntimeError, EOFError, zip errors, ...: a damaged file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({reason})") from None


def load_checkpoint(path: str | Path, expected_format: str | None = None) -> dict[str, Any]:
    """Load and verify a checkpoint; a missing, damaged or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = _read(path)
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a kdlab checkpoint")
    stored = payload.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise CheckpointError(
            f"checkpoint {path} has no content checksum (written by an older kdlab); "
            "re-run the stage that makes it"
        )
    if payload_sha256(payload) != stored:
        raise CheckpointError(
            f"checkpoint {path} does not match its content checksum (corrupt); it was not used"
        )
    if expected_format is not None and payload["format"] != expected_format:
        raise CheckpointError(
            f"checkpoint {path} has format {payload['format']!r}, expected {expected_format!r}"
        )
    return payload


def load_model(path: str | Path, device: torch.device):
    """Rebuild a model from a verified kdlab model checkpoint: (model in eval mode, payload)."""
    from kdlab.models import make_model

    payload = load_checkpoint(path, MODEL_FORMAT)
    model = make_model(payload["arch"], payload["in_channels"], payload["num_classes"],
                       payload.get("image_size", 32), payload.get("size"))  # fmt: skip
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit arch {payload['arch']}: {exc}"
        ) from None
    return model.to(device).eval(), payload
