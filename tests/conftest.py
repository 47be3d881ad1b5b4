"""Shared fixtures: the real digits dataset prepared once, and params.yaml builders."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def tiny_params(**overrides) -> dict:
    """The repository's params.yaml with small, fast training settings (and dotted overrides)."""
    params = default_params()
    for role in ("teacher", "student"):
        params[role].update(arch="resnet8", epochs=3, batch_size=128, save_epochs=[2])
    params["device"] = "cpu"
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(params), sort_keys=False))
    return path


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's python/dvc first on PATH, no colour, no pager."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, env_extra: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    env = {**tool_env(), **(env_extra or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's digits prepared by the real `prepare` code (no network)."""
    from kdlab.data.datasets import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", out)
    return out


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 (own host and client keys, internal sftp) for SSH remotes."""
    from .services import SSH_BINARIES, require, start_sshd

    require(SSH_BINARIES, "sshd")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def ci_fixtures(tmp_path_factory, sshd) -> Path:
    """Trained artefacts (a digits teacher, cached activations), by `dvc pull` as CI does.

    tests/fixtures is a DVC project whose remote `ci` a lab points at its SSH server; here
    that server is the test sshd serving tests/fixtures/remote. The project is cloned into a
    temporary git repo first, so the pull never writes into the checkout.
    """
    base = tmp_path_factory.mktemp("ci-fixtures")
    project = base / "repo" / "tests" / "fixtures"
    tracked = run(["git", "ls-files", "-co", "--exclude-standard", "."], cwd=FIXTURES_DIR)
    for rel in tracked.stdout.split():
        if not rel.startswith("remote/"):
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(FIXTURES_DIR / rel, project / rel)
    run(["git", "init", "-q", str(base / "repo")], cwd=base)
    env = sshd.client_home(base / "home")
    for args in (["url", sshd.url(FIXTURES_DIR / "remote")], ["keyfile", str(sshd.client_key)]):
        run(["dvc", "remote", "modify", "--local", "ci", *args], cwd=project)
    pulled = run(["dvc", "pull"], cwd=project, env_extra=env)
    assert "fetched" in pulled.stdout + pulled.stderr or "added" in pulled.stdout, pulled
    return project


# In CI nothing may be skipped: a skipped integration test would let CI pass without running it.
_skipped: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} tests were skipped, which CI does not allow: {_skipped[:5]}")
        session.exitstatus = 1


def flip_tensor_bytes(path: Path, count: int = 16) -> None:
    """Flip `count` bytes in the middle of the largest tensor record of a torch zip file."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)  # fmt: skip
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A Python with nothing but the standard library, like one a user forgot to activate."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin" / "python"


def uea_mirror() -> Path:
    """The UEA/UCR .ts files (tests/fixtures/uea_mirror.py, which `make test` runs); a missing
    mirror fails the test that needs it, with the command that makes it."""
    path = Path(os.environ.get("KDLAB_UEA_MIRROR", REPO_ROOT / ".tools" / "uea"))
    if not (path / "JapaneseVowels_TRAIN.ts").is_file():
        raise AssertionError(f"no UEA .ts files in {path}: run `python "
                             f"tests/fixtures/uea_mirror.py {path}` (make test does)")  # fmt: skip
    return path
