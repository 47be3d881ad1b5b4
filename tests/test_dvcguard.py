"""kdlab's word before DVC's (kdlab.dvcguard): a `dvc exp run` / `dvc repro` with a bad `-S`,
invalid YAML, a busy workspace or no disk space is refused in one kdlab line before DVC rewrites
params.yaml, stashes the workspace or removes an output."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdlab import dvcguard

from .conftest import run, tool_env
from .repos import git, make_clone, restore_tracked
from .services import unavailable

pytestmark = pytest.mark.integration


def tree_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file of the repo outside .git and .dvc/tmp (what a refusal must keep)."""
    found = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/tmp/")):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_clone(tmp_path_factory.mktemp("guard"))


def refused(repo: Path, *args: str) -> str:
    """Run `dvc <args>`, expect kdlab's refusal; return its one line. Nothing may change."""
    before = tree_hashes(repo)
    refs = git(repo, "for-each-ref", "refs/exps/")
    proc = run(["dvc", *args], cwd=repo, check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2, out
    assert out.startswith("kdlab: error: ") and "\n" not in out, out
    assert "Traceback" not in out and "ERROR" not in out, out
    assert tree_hashes(repo) == before, "a refused command changed the workspace"
    assert git(repo, "for-each-ref", "refs/exps/") == refs, "a refused command queued something"
    assert git(repo, "status", "--porcelain") == ""
    return out


def test_make_install_puts_the_guard_in_the_environment():
    assert dvcguard.installed(), "run `make install` (python -m kdlab.dvcguard --install)"


@pytest.mark.parametrize("route", [[], ["--queue"], ["--temp"]])
def test_an_unknown_key_names_the_nearest_one(repo, route):
    line = refused(repo, "exp", "run", *route, "-S", "teacher.lrr=0.1")
    assert line == ("kdlab: error: -S teacher.lrr=0.1: params.yaml has no key teacher.lrr "
                    "(did you mean teacher.lr?); nothing was changed")  # fmt: skip


@pytest.mark.parametrize("route", [[], ["--queue"]])
def test_a_bad_value_is_refused_before_params_yaml_is_rewritten(repo, route):
    line = refused(repo, "exp", "run", *route, "-S", "kd.alpha=1.5", "-S", "student.epochs=3")
    assert "kd.alpha must be in [0, 1], got 1.5; nothing was changed" in line, line


def test_each_point_of_a_sweep_is_checked(repo):
    line = refused(repo, "exp", "run", "--queue", "-S", "kd.alpha=0.1,0.5,2")
    assert line.startswith("kdlab: error: -S kd.alpha=2: kd.alpha must be in [0, 1]"), line


def test_a_malformed_override_is_one_line(repo):
    line = refused(repo, "exp", "run", "-S", "kd.alpha=[")
    assert line.startswith("kdlab: error: -S kd.alpha=[ is not a valid override: "), line


def test_invalid_yaml_gives_the_line_and_column(repo):
    params = repo / "params.yaml"
    saved = params.read_bytes()
    params.write_bytes(saved + b"teacher:\n  lr: [\n")
    git(repo, "commit", "-qam", "broken params")
    try:
        for args in (["exp", "run", "-S", "kd.alpha=0.3"], ["repro"]):
            line = refused(repo, *args)
            assert line.startswith("kdlab: error: params.yaml is not valid YAML at line "), line
    finally:
        git(repo, "reset", "-q", "--hard", "HEAD~1")


@pytest.fixture
def held_by_another_run(repo):
    """Another process holds the workspace, as a running `dvc exp run -n x06` does."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from kdlab.workspace import acquire
        acquire(Path({str(repo)!r}), sys.argv[1], "dvc exp run -n x06 -S kd.alpha=0.6")
        print("held", flush=True)
        time.sleep(120)
    """)

    def hold(mode: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code, mode], stdout=subprocess.PIPE,
                                text=True, env=tool_env())  # fmt: skip
        assert proc.stdout.readline().strip() == "held"
        holders.append(proc)
        return proc

    holders: list[subprocess.Popen] = []
    yield hold
    for proc in holders:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("route", [[], ["--queue"]])
def test_a_second_run_in_a_busy_workspace_is_refused_before_anything_changes(
    repo, held_by_another_run, route
):
    holder = held_by_another_run("run")
    line = refused(repo, "exp", "run", *route, "-n", "x07", "-S", "kd.alpha=0.7")
    assert line.startswith(
        f"kdlab: error: this workspace is busy: `dvc exp run -n x06 -S kd.alpha=0.6` is running "
        f"(pid {holder.pid}, since "
    ), line
    assert refused(repo, "repro").startswith("kdlab: error: this workspace is busy"), line
    holder.kill()
    holder.wait()  # a killed holder frees the workspace: the next refusal is about the value
    line = refused(repo, "exp", "run", *route, "-S", "kd.alpha=1.7")
    assert "kd.alpha must be in [0, 1]" in line, line


def test_queueing_waits_for_another_queueing(repo, held_by_another_run):
    from kdlab.workspace import acquire

    holder = held_by_another_run("queue")
    subprocess.Popen(["bash", "-c", f"sleep 1; kill {holder.pid}"])
    fd = acquire(repo, "queue", "dvc exp run --queue", wait_s=30)  # waits, then gets it
    os.close(fd)


def test_too_little_disk_for_dvc_itself_is_kdlabs_line(tmp_path):
    """DVC, with a few KiB free, fails with "unexpected error - no error" after rewriting what
    it could; kdlab refuses first."""
    if os.geteuid() != 0:
        unavailable("small tmpfs", "mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        unavailable("small tmpfs", mounted.stderr.decode().strip())
    try:
        repo = small / "repo"
        for rel in ("dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore"):
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(__file__).parents[1] / rel, repo / rel)
        line = refused_outside_git(repo, "exp", "run", "-S", "kd.alpha=0.3")
        assert line.startswith(f"kdlab: error: not enough disk space in {repo}: "), line
        assert "MiB free, DVC needs about 32 MiB for its own bookkeeping" in line, line
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def refused_outside_git(repo: Path, *args: str) -> str:
    before = tree_hashes(repo)
    proc = run(["dvc", *args], cwd=repo, check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2 and out.startswith("kdlab: error: ") and "\n" not in out, out
    assert tree_hashes(repo) == before
    return out


def test_another_repository_is_left_to_dvc(tmp_path):
    """The guard speaks only for kdlab pipelines: elsewhere DVC's own word stands."""
    assert not dvcguard.is_kdlab_repo(tmp_path)
    run(["git", "init", "-q"], cwd=tmp_path)
    run(["dvc", "init", "-q"], cwd=tmp_path)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo\n    params: [a]\n")
    proc = run(["dvc", "exp", "run", "-S", "b=2"], cwd=tmp_path, check=False)
    assert "kdlab" not in proc.stdout + proc.stderr


def test_a_valid_run_is_let_through(repo):
    """The guard is no refusal machine: a valid `-S` reaches DVC (here `--dry`: nothing runs)."""
    proc = run(["dvc", "exp", "run", "--dry", "-S", "kd.alpha=0.3"], cwd=repo, check=False)
    assert "kdlab: error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    restore_tracked(repo)


def test_the_guard_validates_in_process_with_the_installed_code(repo):
    """In the repository the environment was installed from (`make repro`), no subprocess: the
    same refusal from `validate` itself (the clones above go through a subprocess with their
    own src/, as their stages will)."""
    with pytest.raises(dvcguard.Refusal, match=r"params.yaml has no key teacher.lrr \(did you"):
        dvcguard.validate(repo, repo, ["teacher.lrr=0.1"], queued=False)
    dvcguard.validate(repo, repo, ["kd.alpha=0.3"], queued=True)  # valid: no refusal
