"""Content checksums: of files, and of checkpoint payloads (tensors and plain data).

A file's sha256 changes with every byte. A payload's checksum is over its content (keys, types,
dtypes, shapes and tensor bytes), so it is stored inside the checkpoint it describes and
recomputed on load: a flipped byte in a tensor record, which torch.load does not notice, is.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _update(digest, value: Any, torch) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(b"D%d" % len(value))
        for key in sorted(value, key=repr):
            _update(digest, key, torch)
            _update(digest, value[key], torch)
    elif isinstance(value, list | tuple):
        digest.update(b"L%d" % len(value))
        for item in value:
            _update(digest, item, torch)
    elif isinstance(value, float):
        digest.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, bool | int | str | bytes) or value is None:
        digest.update(f"{type(value).__name__}:{value!r}".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__} in a checkpoint")


def payload_sha256(payload: Any) -> str:
    """sha256 over a checkpoint payload's content, in a canonical order."""
    import torch  # here, not at the top: `prepare` hashes files and never loads torch

    digest = hashlib.sha256()
    _update(digest, payload, torch)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """sha256 of JSON data in canonical form (sorted keys): a file's checksum of its own content."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
