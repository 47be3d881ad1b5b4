"""Declared = read: each stage's src/ deps in dvc.yaml are exactly its module's import closure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdlab import codedeps
from kdlab.codedeps import (
    DynamicImportError,
    code_digest,
    declared_files,
    import_closure,
    stage_modules,
)

from .conftest import REPO_ROOT

DVC_YAML = REPO_ROOT / "dvc.yaml"
STAGES = yaml.safe_load(DVC_YAML.read_text())["stages"]


def rel(paths) -> list[str]:
    return sorted(Path(p).relative_to(REPO_ROOT).as_posix() for p in paths)


def test_every_stage_runs_a_kdlab_module():
    assert set(stage_modules(DVC_YAML)) == set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_its_import_closure(stage):
    module = stage_modules(DVC_YAML)[stage]
    closure = set(import_closure(module))
    declared = declared_files(STAGES[stage]["deps"])
    missing, extra = rel(closure - declared), rel(declared - closure)
    hint = "run `kdlab deps` for the exact lists"
    assert not missing, f"{stage} imports files dvc.yaml does not declare: {missing}; {hint}"
    assert not extra, f"{stage} declares files it never imports: {extra}; {hint}"


def test_teacher_does_not_depend_on_kd_methods():
    files = rel(import_closure("kdlab.stages.train_teacher"))
    distill = [f for f in files if "/distill/" in f]
    # the interface (base, spec: PairInfo), the pure baseline, and no method's params or loss
    assert distill == ["src/kdlab/distill/__init__.py", "src/kdlab/distill/base.py",
                       "src/kdlab/distill/none.py", "src/kdlab/distill/spec.py"]  # fmt: skip
    # validation (kdlab check) reads the methods' specs, not their losses
    check = rel(import_closure("kdlab.validate"))
    assert "src/kdlab/distill/specs/at.py" in check, check
    assert "src/kdlab/distill/at.py" not in check and "src/kdlab/distill/base.py" not in check
    student = rel(import_closure("kdlab.stages.train_student"))
    assert "src/kdlab/distill/at.py" in student and "src/kdlab/training/student.py" in student


def write(root: Path, rel_path: str, text: str) -> None:
    path = root / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_src(tmp_path) -> Path:
    """A tiny `kdlab` package: a function-local import, a relative import, a dynamic one."""
    root = tmp_path / "src"
    write(root, "kdlab/__init__.py", "")
    write(root, "kdlab/stage.py", "def main():\n    from kdlab.lib import helper\n")
    write(root, "kdlab/lib/__init__.py", "from .util import x\n")
    write(root, "kdlab/lib/helper.py", "import kdlab.plugins.registry\n")
    write(root, "kdlab/lib/util.py", "x = 1\n")
    write(root, "kdlab/plugins/__init__.py", "")
    write(root, "kdlab/plugins/registry.py",
          "import importlib\nDYNAMIC_IMPORTS = ('kdlab.plugins',)\n"
          "importlib.import_module('kdlab.plugins.a')\n")  # fmt: skip
    write(root, "kdlab/plugins/a.py", "")
    write(root, "kdlab/plugins/b.py", "")
    write(root, "kdlab/unused.py", "")
    return root


def test_closure_follows_local_relative_and_dynamic_imports(fake_src):
    codedeps.direct_imports.cache_clear()
    found = sorted(
        p.relative_to(fake_src).as_posix() for p in import_closure("kdlab.stage", fake_src)
    )
    assert found == ["kdlab/__init__.py", "kdlab/lib/__init__.py", "kdlab/lib/helper.py",
                     "kdlab/lib/util.py", "kdlab/plugins/__init__.py", "kdlab/plugins/a.py",
                     "kdlab/plugins/b.py", "kdlab/plugins/registry.py",
                     "kdlab/stage.py"]  # fmt: skip


def test_undeclared_dynamic_import_is_an_error(fake_src):
    write(fake_src, "kdlab/plugins/registry.py", "import importlib\nimportlib.import_module('x')\n")
    codedeps.direct_imports.cache_clear()
    with pytest.raises(DynamicImportError, match="declares no DYNAMIC_IMPORTS"):
        import_closure("kdlab.stage", fake_src)


def test_fingerprint_code_is_the_closure(fake_src):
    """The resume fingerprint's code digest changes with a file of the closure, not otherwise."""
    codedeps.direct_imports.cache_clear()
    before = code_digest("kdlab.stage", fake_src)
    write(fake_src, "kdlab/unused.py", "y = 2\n")
    assert code_digest("kdlab.stage", fake_src) == before
    write(fake_src, "kdlab/plugins/b.py", "z = 3\n")
    assert code_digest("kdlab.stage", fake_src) != before
    codedeps.direct_imports.cache_clear()


def test_kdlab_deps_prints_the_deps_dvc_yaml_holds(capsys, monkeypatch):
    """`kdlab deps` is what a contributor pastes into dvc.yaml: it must be what is there."""
    from kdlab.cli import main

    monkeypatch.chdir(REPO_ROOT)
    assert main(["deps"]) == 0
    printed, stage = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  - "):
            printed[stage].append(line[4:])
        else:
            stage = line.split(":")[0]
            printed[stage] = []
    declared = {name: [d for d in spec["deps"] if d.startswith("src/")]
                for name, spec in STAGES.items()}  # fmt: skip
    assert printed == declared
