"""DVC remotes that re-hash what they download.

By default `dvc pull` trusts the remote: one flipped byte in an object there is pulled, checked
out, and `dvc status` says "up to date" — only the next stage that loads the file refuses it.
With `verify = true` on the remote, DVC re-computes every downloaded object's hash and the pull
fails instead. kdlab's documented remotes set it; `kdlab check` warns about one that does not.
"""

from __future__ import annotations

import configparser
import contextlib
import re
from pathlib import Path

_REMOTE = re.compile(r"""^\s*'?remote\s+"([^"]+)"'?\s*$""")


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    with contextlib.suppress(configparser.Error):  # DVC's own commands say what is wrong
        parser.read(path)
    return parser


def unverified_remotes(repo: Path) -> list[str]:
    """Remotes in .dvc/config (and config.local) without `verify = true`."""
    remotes: dict[str, bool] = {}
    for name in ("config", "config.local"):
        parser = _read(repo / ".dvc" / name)
        for section in parser.sections():
            match = _REMOTE.match(section)
            if match:
                value = parser.get(section, "verify", fallback=None)
                if value is not None:
                    remotes[match.group(1)] = value.strip().lower() in ("true", "1", "yes")
                else:
                    remotes.setdefault(match.group(1), False)
    return [name for name, verified in remotes.items() if not verified]


def verify_warnings(repo: Path) -> list[str]:
    return [
        f"remote {name} does not verify what `dvc pull` downloads (a corrupt object there would "
        f"be pulled unseen): run `dvc remote modify {name} verify true` and commit .dvc/config"
        for name in unverified_remotes(repo)
    ]
