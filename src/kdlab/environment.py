"""Is this Python the project's environment? If not, one line that says how to fix it.

DVC runs each stage as `python -m kdlab.stages.<name>` with the `python` first on PATH. Calling
`.venv/bin/dvc repro` without activating the environment runs the stages under another Python,
which fails on its first third-party import with a traceback. The stages (and `python -m
kdlab`) check first, without importing anything: `importlib.util.find_spec` only looks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REQUIRED = ("PIL", "dvc", "dvclive", "matplotlib", "numpy", "scipy", "sklearn", "torch",
            "torchvision", "tqdm", "yaml")  # fmt: skip
"""Every third-party module the stages import (tests/test_environment.py keeps it so)."""


def missing_modules() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def how_to_fix(cwd: Path) -> str:
    if (cwd / ".venv" / "bin" / "python").exists():
        return "run `source .venv/bin/activate` and run the command again"
    return "run `make install`, then `source .venv/bin/activate`, and run the command again"


def require_environment() -> None:
    """Exit with status 2 and one line on stderr if this Python lacks a required module."""
    missing = missing_modules()
    if missing:
        named = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        sys.stderr.write(
            f"kdlab: {sys.executable} is not the project's environment (no module {named}): "
            f"{how_to_fix(Path.cwd())}\n"
        )
        raise SystemExit(2)
