"""The SSH remote cache against a real sshd on 127.0.0.1 (sftp via internal-sftp).

Push from one workspace, clone afresh, pull: `dvc status` is clean and `dvc repro` runs nothing.
Credentials live only in `.dvc/config.local` (never committed); ssh runs with a temporary HOME
whose known_hosts holds the test server's key, so the user's ~/.ssh is never read or written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import run
from .repos import dvc, git, make_clone, set_identity

pytestmark = pytest.mark.integration


def in_env(env: dict[str, str]):
    def dvc_in(repo: Path, *args: str) -> str:
        proc = run(["dvc", *args], cwd=repo, env_extra=env)
        return proc.stdout + proc.stderr

    return dvc_in


def test_push_fresh_clone_pull_is_clean_and_repro_is_a_no_op(tmp_path, sshd):
    dvc_home = in_env(sshd.client_home(tmp_path / "home"))
    repo = make_clone(tmp_path / "work")
    storage = tmp_path / "remote-storage"
    url = sshd.url(storage)
    dvc(repo, "remote", "add", "-d", "cluster", url)
    dvc(repo, "remote", "modify", "--local", "cluster", "keyfile", str(sshd.client_key))
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results and the remote")
    committed = git(repo, "show", "HEAD:.dvc/config")
    assert url in committed and "keyfile" not in committed  # the secret stays local
    assert ".dvc/config.local" not in git(repo, "ls-files")
    pushed = dvc_home(repo, "push")
    assert re.search(r"\d+ files? pushed", pushed), pushed
    assert any((storage / "files/md5").rglob("*"))

    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(repo), str(fresh))
    set_identity(fresh)
    assert "keyfile" not in (fresh / ".dvc/config").read_text()
    dvc(fresh, "remote", "modify", "--local", "cluster", "keyfile", str(sshd.client_key))
    pulled = dvc_home(fresh, "pull")
    assert re.search(r"\d+ files? (fetched|added)", pulled), pulled
    assert "up to date" in dvc_home(fresh, "status").lower()
    out = dvc_home(fresh, "repro")
    assert "Running stage" not in out and "up to date" in out.lower(), out
    for rel in ("models/teacher/model.pt", "models/student/model.pt", "data/digits/meta.json"):
        assert (fresh / rel).read_bytes() == (repo / rel).read_bytes()
