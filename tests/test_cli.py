"""Every mistake on the `kdlab` command line is one line on stderr and exit status 2: argparse's
usage errors, paths that do not exist or cannot be written, params files that are not params."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import VENV_BIN, run
from .repos import git, set_identity

CASES = {
    "bench --suite bogus": "kdlab bench: error: argument --suite: invalid choice: 'bogus' "
    "(choose from 'train', 'real', 'dvc', 'all') (see kdlab bench --help)",
    "": "kdlab: error: the following arguments are required: command (see kdlab --help)",
    "grid": "kdlab grid: error: the following arguments are required: grid_command "
    "(see kdlab grid --help)",
    "deps --bogus": "kdlab: error: unrecognized arguments: --bogus (see kdlab --help)",
    "show --repo nonexistent": "kdlab show: error: nonexistent: No such file or directory",
    "report --out params.yaml/report --only x": "kdlab report: error: dvc exp show failed in .: "
    "ERROR: you are not inside of a DVC repository",
    "check --params notes.txt": "kdlab check: error: params.yaml must be a mapping of sections, "
    "got str",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("cli")
    git(repo, "init", "-q")
    set_identity(repo)
    (repo / "notes.txt").write_text("not params\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a repository with no params")
    return repo


@pytest.mark.parametrize("command", sorted(CASES))
def test_a_mistake_is_one_line(repo, command):
    proc = run([str(VENV_BIN / "kdlab"), *command.split()], cwd=repo, check=False)
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(CASES[command]), proc.stderr


def test_show_lists_what_it_can_beside_a_file_that_is_not_params(repo):
    proc = run([str(VENV_BIN / "kdlab"), "show", "--params", "notes.txt"], cwd=repo)
    assert proc.stderr == "" and proc.stdout.startswith("experiment")
