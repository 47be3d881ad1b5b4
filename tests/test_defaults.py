"""One source of truth per param: the dataclass default (and its docstring).

params.yaml and the README's tables state the same values, checked here value for value: a
default changed in one place and not the others fails."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kdlab.config import (
    AnalyzeConfig,
    DataConfig,
    ExternalConfig,
    ExtractConfig,
    KDConfig,
    SAETrainConfig,
    ShardsConfig,
    StudentConfig,
    TeacherConfig,
)
from kdlab.distill.specs import load_specs
from kdlab.grid import GridConfig
from kdlab.schema import load_yaml
from kdlab.slurm.config import SlurmConfig

ROOT = Path(__file__).resolve().parents[1]


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def defaults() -> dict:
    """params.yaml as the dataclasses' defaults would write it (seed has none: it is required)."""
    kd = {"method": KDConfig.method, "alpha": KDConfig.alpha}
    kd |= {name: dataclasses.asdict(spec.params_cls()) for name, spec in load_specs().items()
           if spec.params_cls is not None}  # fmt: skip
    sections = {"data": DataConfig(), "teacher": TeacherConfig(), "student": StudentConfig(),
                "extract": ExtractConfig(), "analyze": AnalyzeConfig(), "grid": GridConfig(),
                "external": ExternalConfig(), "shards": ShardsConfig(), "sae": SAETrainConfig(),
                "slurm": SlurmConfig()}  # fmt: skip
    out = {"device": "auto", **{k: dataclasses.asdict(v) for k, v in sections.items()}, "kd": kd}
    return plain(out)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_params_yaml_states_every_default_and_nothing_else():
    given = load_yaml((ROOT / "params.yaml").read_text())
    assert given.pop("seed") == 0
    expected = flatten(defaults())
    assert flatten(plain(given)) == expected


def split_top_level(text: str) -> list[str]:
    """'[a, b], 4, 1e-3' -> ['[a, b]', '4', '1e-3'] (commas inside brackets kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def cell_value(text: str):
    value = load_yaml(text)
    if isinstance(value, str):
        try:
            return float(value)  # 5e-4 (YAML 1.2 floats need a dot)
        except ValueError:
            return value
    return value


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_params_table_states_the_defaults():
    expected = flatten(defaults())
    rows = [line for line in readme_section("## Params (`params.yaml`)").splitlines()
            if line.startswith("| `")]  # fmt: skip
    checked = set()
    for row in rows:
        keys_cell, value_cell = (c.strip() for c in row.strip("|").split("|")[:2])
        keys = re.findall(r"`([^`]+)`", keys_cell)
        if keys == ["kd.<method>.*"]:
            continue  # the KD methods' table, below
        values = [cell_value(v) for v in split_top_level(value_cell)]
        assert len(values) == len(keys), row
        for key, value in zip(keys, values, strict=True):
            paths = [key.replace("*", role, 1) for role in ("teacher", "student")] \
                if key.startswith("*.") else [key]  # fmt: skip
            for path in paths:
                if path == "seed":
                    assert value == 0
                    continue
                assert path in expected or any(k.startswith(path + ".") for k in expected), path
                assert expected.get(path, {}) == value, (path, value, expected.get(path))
                checked.add(path)
    missing = {k for k in expected if not k.startswith("kd.") or k.count(".") == 1} - checked
    assert not missing, f"params without a README row: {sorted(missing)}"


def test_readme_kd_table_states_each_methods_defaults():
    rows = {m.group(1): line for line in readme_section("## KD methods").splitlines()
            if (m := re.match(r"\| `(\w+)` \|", line))}  # fmt: skip
    specs = load_specs()
    assert set(rows) == set(specs)
    for name, spec in specs.items():
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        params_cell, weight_cell = cells[-2], cells[-1]
        if spec.params_cls is None:
            assert params_cell == weight_cell == "–"
            continue
        default = dataclasses.asdict(spec.params_cls())
        stated = {k: cell_value(v.strip()) for k, v in
                  re.findall(r"`(\w+)` (\[[^\]]*\]|[^,(]+)", params_cell)}  # fmt: skip
        assert stated == {k: plain(v) for k, v in default.items() if k != "weight"}, name
        assert cell_value(weight_cell) == pytest.approx(default["weight"]), name
