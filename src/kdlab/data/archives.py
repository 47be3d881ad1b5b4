"""Safe extraction of downloaded archives into a builder's scratch directory."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from kdlab.errors import DataError


def safe_extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths, '..', devices, links out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(
            f"{archive.name} cannot be extracted ({exc}); delete it and re-run"
        ) from None


def safe_extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DataError(f"{archive.name} holds an unsafe path {name!r}")
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{archive.name} cannot be extracted ({exc}); delete it and re-run"
        ) from None
