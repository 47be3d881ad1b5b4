"""Downloads that survive interruption and never hand over a corrupt file.

A file is fetched into `<name>.part`; a re-run continues it with an HTTP Range request (or starts
over when the server ignores ranges), and only a file whose MD5 matches the published checksum
is renamed to its final name. A checksum mismatch removes the partial file and stops with a
clear error. Where there is no network (a compute node), the error says to prepare the data on
the login node and `dvc push` it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from kdlab.errors import DataError

log = logging.getLogger(__name__)

NO_NETWORK_HINT = (
    "this machine cannot reach it. Compute nodes usually have no internet: run "
    "`dvc repro prepare` on the login node, then `dvc push`; jobs then `dvc pull` the data "
    "(see slurm/README.md)"
)


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published: where it is and its published MD5."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name

    def at_mirror(self, mirror: str) -> str:
        """The same file name under a mirror's base URL (empty mirror = the official URL)."""
        if not mirror:
            return self.url
        return mirror.rstrip("/") + "/" + self.filename


def md5_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: RemoteFile, download_dir: Path, mirror: str = "", timeout: float = 60.0) -> Path:
    """Return the verified local copy of `remote`, downloading or resuming it if needed."""
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    final = download_dir / remote.filename
    if final.exists():
        if md5_file(final) == remote.md5:
            return final
        log.warning("%s does not match its checksum; downloading it again", final)
        final.unlink()
    url = remote.at_mirror(mirror)
    part = download_dir / (remote.filename + ".part")
    _download(url, part, timeout)
    actual = md5_file(part)
    if actual != remote.md5:
        part.unlink()
        raise DataError(
            f"{remote.filename} from {url} has MD5 {actual}, expected {remote.md5}: the download "
            f"is corrupt (removed); run prepare again, or check data.mirror"
        )
    os.replace(part, final)
    return final


def _download(url: str, part: Path, timeout: float) -> None:
    """Fetch `url` into `part`, continuing an existing partial file where the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kdlab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range past the end: the partial file is complete
            return
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url} ({reason}): {NO_NETWORK_HINT}") from None
    with response:
        resumed = offset and response.status == 206
        if offset and not resumed:
            log.info("%s: server ignored the range request, starting over", url)
            offset = 0
        elif resumed:
            log.info("%s: resuming at byte %d", url, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
            disable=None,
        ) as bar:  # fmt: skip
            try:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise DataError(
                    f"download of {url} was interrupted ({type(exc).__name__}); "
                    f"run prepare again to resume it"
                ) from None
    if total is not None and part.stat().st_size < total:
        raise DataError(
            f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
            f"run prepare again to resume it"
        )
