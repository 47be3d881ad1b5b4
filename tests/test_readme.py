"""The README stays true: every params.yaml key is in its params table, and every `kdlab`
command line in its code blocks is one the CLI accepts."""

from __future__ import annotations

import re
import shlex

import pytest

from kdlab.cli import build_parser
from kdlab.schema import load_yaml

from .conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def documented_keys() -> set[str]:
    table = [line for line in README.splitlines() if line.startswith("| `")]
    return {key for line in table for key in re.findall(r"`([\w.*<>]+)`", line.split("|")[1])}


def param_keys() -> list[str]:
    params = load_yaml((REPO_ROOT / "params.yaml").read_text())
    keys = []
    for section, value in params.items():
        if not isinstance(value, dict):
            keys.append(section)
            continue
        for key, inner in value.items():
            if section == "kd" and isinstance(inner, dict):
                continue  # per-method params: `kd.<method>.*` and the KD table
            keys.append(f"{section}.{key}")
    return keys


def test_every_param_is_in_the_params_table():
    documented = documented_keys()
    missing = []
    for key in param_keys():
        section, _, leaf = key.partition(".")
        wildcard = f"*.{leaf}" if section in ("teacher", "student") else None
        if key not in documented and wildcard not in documented:
            missing.append(key)
    assert not missing, f"params missing from the README table: {missing}"
    assert "kd.<method>.*" in documented


def readme_kdlab_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("kdlab ")]


@pytest.mark.parametrize("command", readme_kdlab_commands())
def test_readme_kdlab_commands_parse(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def _block(name: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert README.count(start) == 1 and README.count(end) == 1, name
    return README.split(start)[1].split(end)[0].strip()


@pytest.mark.parametrize(
    ("block", "source"),
    [("fashion-mnist-summary", "docs/results/fashion-mnist/summary.md"),
     ("fashion-mnist-bench", "docs/results/fashion-mnist/bench-real.md"),
     ("fashion-mnist-show", "docs/results/fashion-mnist/show.txt"),
     ("bench-dvc", "docs/bench/dvc.md")],
)  # fmt: skip
def test_readme_result_tables_are_the_committed_outputs(block, source):
    """The README's result tables are copied from the files the commands wrote, not typed."""
    text = _block(block)
    if source.endswith(".txt"):  # a terminal table, in a code block
        text = text.removeprefix("```").removesuffix("```").strip()
    assert text == (REPO_ROOT / source).read_text().strip()


def test_python_dash_m_kdlab_is_the_kdlab_command():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "kdlab", "check", "--params", "nope.yaml"],
                          capture_output=True, text=True, cwd=REPO_ROOT)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("kdlab check: error:"), proc.stderr
