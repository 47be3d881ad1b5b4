"""`make lint` (in the README) passes: ruff's checks and formatting over the whole repository,
Markdown code blocks included."""

from __future__ import annotations

import pytest

from .conftest import REPO_ROOT, VENV_BIN, run


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff(command):
    proc = run([str(VENV_BIN / "ruff"), *command], cwd=REPO_ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
