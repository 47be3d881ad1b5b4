"""The service fixtures' contract: missing services skip locally but fail in CI."""

from __future__ import annotations

import pytest

from .services import require


def test_missing_service_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run the demo tests"):
        require(("kdlab-no-such-program",), "demo")


def test_missing_service_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="demo needs kdlab-no-such-program"):
        require(("kdlab-no-such-program",), "demo")
