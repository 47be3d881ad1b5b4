"""The SSH remote cache against a real sshd on 127.0.0.1 (sftp via internal-sftp).

Push from one workspace, clone afresh, pull: `dvc status` is clean and `dvc repro` runs nothing.
Credentials live only in `.dvc/config.local` (never committed); ssh runs with a temporary HOME
whose known_hosts holds the test server's key, so the user's ~/.ssh is never read or written.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import run
from .repos import assert_up_to_date, dvc, git, make_clone, set_identity

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
    assert_up_to_date(dvc_home(fresh, "status"))
    out = dvc_home(fresh, "repro")
    assert re.findall(r"Running stage '(\w+)'", out) == ["check"], out  # the preflight alone
    for rel in ("models/teacher/model.pt", "models/student/model.pt", "data/digits/meta.json"):
        assert (fresh / rel).read_bytes() == (repo / rel).read_bytes()


def _flip_teacher_on_remote(repo: Path, storage: Path) -> Path:
    """One flipped byte in the teacher's model.pt as the remote stores it (content-addressed)."""
    import json

    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["train_teacher"]["outs"]}
    tree = outs["models/teacher"]
    listing = json.loads((storage / "files/md5" / tree[:2] / tree[2:]).read_text())
    md5 = next(e["md5"] for e in listing if e["relpath"] == "model.pt")
    obj = storage / "files/md5" / md5[:2] / md5[2:]
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    return obj


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A repo with results, its remote config committed as the README says (verify = true)."""
    base = tmp_path_factory.mktemp("verify")
    repo = make_clone(base / "work")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results")
    return repo


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_a_corrupt_object_on_the_remote_fails_the_pull(pushed, tmp_path, sshd, kind):
    """With `verify = true` (README), `dvc pull` re-hashes what it downloads: a flipped byte on
    the remote fails the pull and the teacher is not checked out, instead of a clean
    `dvc status` and a refusal stages later."""
    env = sshd.client_home(tmp_path / "home") if kind == "ssh" else {}
    dvc_env = in_env(env)
    storage = tmp_path / "storage"
    repo = tmp_path / "repo"
    shutil.copytree(pushed, repo, symlinks=True)  # results, cache and git, per remote kind
    url = sshd.url(storage) if kind == "ssh" else str(storage)
    dvc(repo, "remote", "add", "-d", "store", url)
    dvc(repo, "remote", "modify", "store", "verify", "true")
    if kind == "ssh":
        dvc(repo, "remote", "modify", "--local", "store", "keyfile", str(sshd.client_key))
    git(repo, "commit", "-qam", "the remote, verified")
    dvc_env(repo, "push")
    _flip_teacher_on_remote(repo, storage)

    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(repo), str(fresh))
    if kind == "ssh":
        dvc(fresh, "remote", "modify", "--local", "store", "keyfile", str(sshd.client_key))
    proc = run(["dvc", "pull"], cwd=fresh, env_extra=env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "models/teacher" in out, out
    assert not (fresh / "models/teacher/model.pt").exists()
    assert (fresh / "models/student/model.pt").read_bytes() == (
        repo / "models/student/model.pt"
    ).read_bytes()  # everything else arrived


def test_kdlab_check_warns_about_a_remote_that_does_not_verify(pushed):
    dvc(pushed, "remote", "add", "-f", "plain", "/tmp/kdlab-unused-remote")
    try:
        proc = run(["kdlab", "check"], cwd=pushed)
        assert ("kdlab check: warning: remote plain does not verify what `dvc pull` downloads"
                in proc.stderr), proc.stderr  # fmt: skip
        dvc(pushed, "remote", "modify", "plain", "verify", "true")
        assert "warning" not in run(["kdlab", "check"], cwd=pushed).stderr
    finally:
        dvc(pushed, "remote", "remove", "plain")
