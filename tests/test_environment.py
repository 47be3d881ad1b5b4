"""A stage or `python -m kdlab` started by a Python without the project's environment says in
one line how to fix it (not a ModuleNotFoundError traceback), and the list it checks is every
third-party module the stages import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from kdlab import codedeps
from kdlab.environment import REQUIRED

from .conftest import REPO_ROOT

SRC = REPO_ROOT / "src"


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != codedeps.PACKAGE}


def test_required_is_every_third_party_module_the_stages_import():
    imported = set()
    for module in codedeps.stage_modules(REPO_ROOT / "dvc.yaml").values():
        for path in codedeps.import_closure(module):
            imported |= third_party_imports(path)
    assert sorted(imported) == sorted(REQUIRED)


@pytest.mark.parametrize("module", ["kdlab.stages.check", "kdlab.stages.train_student", "kdlab"])
def test_a_python_without_the_environment_is_one_line(bare_python, tmp_path, module):
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    proc = subprocess.run([str(bare_python), "-m", module, "--help"], cwd=tmp_path,
                          env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"kdlab: {bare_python} is not the project's environment "
                                  "(no module PIL, dvc, dvclive and 8 more): run "
                                  "`source .venv/bin/activate`"), proc.stderr  # fmt: skip
    (tmp_path / ".venv" / "bin" / "python").unlink()
    proc = subprocess.run([str(bare_python), "-m", module], cwd=tmp_path,
                          env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True)  # fmt: skip
    assert proc.stderr.rstrip().endswith("run `make install`, then `source .venv/bin/activate`, "
                                         "and run the command again"), proc.stderr  # fmt: skip


def test_the_project_environment_passes():
    proc = subprocess.run([sys.executable, "-m", "kdlab", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "kdlab" in proc.stdout
