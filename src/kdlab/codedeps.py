"""Which of kdlab's source files a stage runs: the import closure of its module.

A DVC stage must declare every file it reads, code included, or an edit leaves a stale result
behind a clean `dvc status`. The closure is computed statically from the source: every
`import`/`from ... import` anywhere in a module (top level and inside functions), the parent
packages' `__init__.py` that Python runs first, and, for a module that imports modules by name
at run time, every module of the packages it names in its `DYNAMIC_IMPORTS` tuple. A module
that calls `importlib.import_module`, `__import__` or `pkgutil.iter_modules` without declaring
`DYNAMIC_IMPORTS` is an error, so no dynamic import can go unseen.

The same closure is hashed into the resume fingerprint (`code_digest`), and a test checks that
each stage's `deps` in dvc.yaml are exactly this set: what DVC tracks is what the stage reads.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "kdlab"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The directory that holds the `kdlab` package (src/)."""

_DYNAMIC_CALLS = {("importlib", "import_module"), ("pkgutil", "iter_modules"), ("", "__import__")}


class DynamicImportError(RuntimeError):
    """A module imports modules by name without declaring which packages (DYNAMIC_IMPORTS)."""


def module_path(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The file that defines `module` (a .py file or a package's __init__.py), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_modules(package: str, root: Path) -> list[str]:
    directory = root.joinpath(*package.split("."))
    return sorted(f"{package}.{p.stem}" for p in directory.glob("*.py") if p.stem != "__init__")


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _declared_dynamic(tree: ast.Module) -> tuple[str, ...]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DYNAMIC_IMPORTS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    return ()


def _calls_dynamic_import(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in _DYNAMIC_CALLS:
                return True
        elif isinstance(func, ast.Name) and ("", func.id) in _DYNAMIC_CALLS:
            return True
    return False


@functools.cache
def direct_imports(module: str, root: Path = SOURCE_ROOT) -> frozenset[str]:
    """kdlab modules that `module` imports (statically or via DYNAMIC_IMPORTS)."""
    path = module_path(module, root)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, path.name == "__init__.py")
            found.add(target)
            # `from pkg import name`: name may be a submodule.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    dynamic = _declared_dynamic(tree)
    if _calls_dynamic_import(tree) and not dynamic:
        raise DynamicImportError(
            f"{path} imports modules by name but declares no DYNAMIC_IMPORTS = (<packages>,)"
        )
    for package in dynamic:
        found.update(_package_modules(package, root))
    return frozenset(
        name
        for name in found
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and module_path(name, root)
    )


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(module: str, root: Path = SOURCE_ROOT) -> list[Path]:
    """Every kdlab source file that running `python -m <module>` can execute, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for each in _with_parents(name):
            if each in seen or module_path(each, root) is None:
                continue
            seen.add(each)
            todo.extend(direct_imports(each, root))
    return sorted(module_path(name, root) for name in seen)


def code_digest(module: str, root: Path = SOURCE_ROOT) -> str:
    """sha256 over the import closure of `module` (relative paths and contents)."""
    digest = hashlib.sha256()
    for path in import_closure(module, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def compact_deps(module: str, root: Path = SOURCE_ROOT) -> list[str]:
    """The closure as dvc.yaml `deps` (paths relative to the repository): a directory where
    every .py file under it is in the closure, the files otherwise."""
    closure = set(import_closure(module, root))
    repo = root.parent

    def covered(directory: Path) -> bool:
        return all(p in closure for p in directory.rglob("*.py") if "__pycache__" not in p.parts)

    deps = []
    for path in sorted(closure):
        parent = path.parent
        top = None
        while parent != root and covered(parent):  # the package root itself never counts
            top, parent = parent, parent.parent
        deps.append((top or path).relative_to(repo).as_posix())
    return sorted(set(deps))


def declared_files(deps: list[str], root: Path = SOURCE_ROOT) -> set[Path]:
    """The kdlab .py files that dvc.yaml `deps` (relative to the repository) cover."""
    repo = root.parent
    files: set[Path] = set()
    for dep in deps:
        path = (repo / dep).resolve()
        if path.is_dir():
            files.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            files.add(path)
    return {p for p in files if root in p.parents}


def stage_modules(dvc_yaml: Path) -> dict[str, str]:
    """Stage name -> the kdlab module its `cmd` runs (`python -m kdlab.stages.<name>`)."""
    import re

    import yaml

    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        match = re.search(r"python -m (kdlab\.[\w.]+)", stage["cmd"])
        if match:
            found[name] = match.group(1)
    return found
