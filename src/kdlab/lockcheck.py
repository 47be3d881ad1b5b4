"""Every number kdlab shows is checked against dvc.lock first.

DVC records the md5 of every output in dvc.lock, the metrics files (`cache: false`, committed to
git) included, but `dvc metrics show` prints whatever bytes are there: one flipped byte in
metrics.json is a garbled number with no warning. `kdlab show` and `kdlab report` read each
metrics file together with the dvc.lock of the same commit and show a mismatch as corrupt,
never its value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import yaml


def load_mapping(blob: bytes | str | None) -> dict:
    """A YAML mapping read fast ({} for nothing, bad YAML or not a mapping): libyaml's C loader,
    not kdlab.schema.load_yaml's pure-Python one, for the hundreds of params and lock files
    `kdlab show` reads per call."""
    if not blob:
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(blob, Loader=loader)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def lock_md5s(lock_text: bytes | str | None) -> dict[str, str]:
    """path -> md5 of every single-file output of every stage in a dvc.lock (directories, whose
    md5 ends in `.dir`, are DVC's to check)."""
    md5s = {}
    stages = load_mapping(lock_text).get("stages")
    for stage in (stages if isinstance(stages, Mapping) else {}).values():
        for out in (stage or {}).get("outs") or []:
            md5 = out.get("md5") if isinstance(out, Mapping) else None
            if isinstance(md5, str) and not md5.endswith(".dir"):
                md5s[out.get("path")] = md5
    return md5s


def corrupt_files(files: Mapping[str, bytes | None], lock_text: bytes | str | None) -> list[str]:
    """The paths among `files` (path -> bytes, None = absent) whose bytes differ from the md5
    that dvc.lock recorded for them. A file dvc.lock does not know cannot be checked and is not
    called corrupt; neither is an absent one (that is an unfinished run, shown as such)."""
    md5s = lock_md5s(lock_text)
    return [
        path
        for path, data in files.items()
        if data is not None and path in md5s and hashlib.md5(data).hexdigest() != md5s[path]
    ]
