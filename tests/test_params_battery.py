"""The bad-input battery as a property: for every field of the params schema (every section's
dataclass, every KD method's `kd.<method>:` section, `grid:` and `slurm:`), generated wrong types,
NaN and infinities, out-of-range numbers, empty and oversized lists, unknown names and hostile
strings are either accepted or refused with a ConfigError of one line that names the field;
never another exception, and never a non-finite number accepted.

The fields are enumerated from the dataclasses themselves, so a new field is in the battery the
moment it exists (and a test keeps the enumeration equal to params.yaml's keys).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdlab.config import (
    AnalyzeConfig,
    DataConfig,
    ExternalConfig,
    ExtractConfig,
    SAETrainConfig,
    ShardsConfig,
    StudentConfig,
    TeacherConfig,
    read_params_file,
)
from kdlab.distill.specs import load_specs
from kdlab.errors import ConfigError
from kdlab.grid import GridConfig
from kdlab.slurm.config import SlurmConfig
from kdlab.validate import check_raw

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"data": DataConfig, "teacher": TeacherConfig, "student": StudentConfig,
            "extract": ExtractConfig, "analyze": AnalyzeConfig, "grid": GridConfig,
            "slurm": SlurmConfig, "external": ExternalConfig, "shards": ShardsConfig,
            "sae": SAETrainConfig}  # fmt: skip
TOP = {"seed": int, "device": typing.Literal["auto", "cpu", "cuda"], "kd.method": str,
       "kd.alpha": float}  # fmt: skip


def schema_fields() -> dict[str, typing.Any]:
    """Every leaf param path -> its annotation, from the dataclasses (not from params.yaml)."""
    fields = dict(TOP)
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                fields[f"{section}.{field.name}"] = hints[field.name]
    for name, spec in load_specs().items():
        if spec.params_cls is None:
            continue
        hints = typing.get_type_hints(spec.params_cls)
        for field in dataclasses.fields(spec.params_cls):
            fields[f"kd.{name}.{field.name}"] = hints[field.name]
    return fields


FIELDS = schema_fields()
BASE = read_params_file(ROOT / "params.yaml")


def leaf_paths(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in (
            "grid.alphas",
            "grid.axes",
            "teacher.size",
            "student.size",
        ):
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def test_the_battery_covers_every_param_of_params_yaml():
    assert sorted(leaf_paths(BASE)) == sorted(FIELDS)


HOSTILE = ["", " ", "bad partition;rm -rf /", "$(touch /tmp/kdlab-pwned)", "`id`", "a\nb",
           "--qos=high\nrm -rf ~", "'\"", "../../etc/passwd", "ümlaut", "x" * 5000, "nan",
           ".nan", "-1", "1e999", "null", "[]", "{}", "stage1,stage2"]  # fmt: skip
NON_FINITE = [math.nan, math.inf, -math.inf]

scalars = st.one_of(
    st.sampled_from(NON_FINITE),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**64, 0.0, -0.0, 1e-300, 1e300, 0.5, 1.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(HOSTILE),
    st.text(max_size=20),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(st.sampled_from(["stage1", "stage2", "stage3", "embedding"]), max_size=6),
    st.integers(min_value=0, max_value=600).map(lambda n: list(range(1, n + 1))),  # oversized
    st.dictionaries(st.sampled_from(["a", "logit", "kd.alpha", "stage1"]), scalars, max_size=3),
)


def set_path(raw: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[leaf] = value


def contains_non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(contains_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(contains_non_finite(v) for v in value.values())
    return False


def assert_refused_or_accepted(raw: dict, path: str, value) -> None:
    try:
        check_raw(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message, f"{path}={value!r}: not one line: {message!r}"
        assert message.strip(), f"{path}={value!r}: an empty message"
        # The field itself, or (a value valid alone but not with the rest, such as epochs
        # below save_epochs) a field of the same section.
        section = path.split(".")[0] if not path.startswith("kd.") else path.rsplit(".", 1)[0]
        assert path in message or section in message, f"{path}={value!r}: {message}"
        if contains_non_finite(value) or type(value) is not type(BASE_VALUE[path]):
            assert path in message or "grid point" in message, f"{path}={value!r}: {message}"
        return
    assert not contains_non_finite(value), f"{path}={value!r} was accepted"


BASE_VALUE = {}
for _path in FIELDS:
    _node = BASE
    for _part in _path.split("."):
        _node = _node[_part]
    BASE_VALUE[_path] = _node


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)  # fmt: skip
@given(path=st.sampled_from(sorted(FIELDS)), value=values)
def test_every_field_refuses_bad_values_in_one_line_naming_it(path, value):
    raw = copy.deepcopy(BASE)
    set_path(raw, path, value)
    assert_refused_or_accepted(raw, path, value)


@pytest.mark.parametrize("path", sorted(FIELDS))
@pytest.mark.parametrize("value", [*NON_FINITE, [math.nan], {"x": math.inf}])
def test_no_field_accepts_nan_or_infinity(path, value):
    """Exhaustively, not by chance: NaN and ±inf in every field, bare and inside a list."""
    raw = copy.deepcopy(BASE)
    set_path(raw, path, value)
    with pytest.raises(ConfigError) as info:
        check_raw(raw)
    assert path in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("path", [p for p, tp in sorted(FIELDS.items())
                                  if typing.get_origin(tp) is tuple])  # fmt: skip
def test_lists_a_method_or_measure_needs_are_never_empty_or_duplicated(path):
    """Empty lists are refused wherever an entry is needed (kd.at.stages, kd.nst.stages, the grid's
    own lists); where empty has a meaning (extract.layers: every layer; analyze.sae_layers: no
    SAE; milestones, save_epochs, slurm.extra: none; case_studies: default samples; grid.methods:
    no KD students; shards.layers: no shards, no SAE) it is accepted. A duplicate never is."""
    empty_means_something = {"extract.layers", "analyze.sae_layers", "teacher.milestones",
                             "shards.layers",
                             "student.milestones", "teacher.save_epochs", "student.save_epochs",
                             "slurm.extra", "analyze.case_studies", "grid.methods"}  # fmt: skip
    raw = copy.deepcopy(BASE)
    set_path(raw, path, [])
    if path in empty_means_something:
        check_raw(raw)
    else:
        with pytest.raises(ConfigError, match=rf"^{path.replace('.', '[.]')}"):
            check_raw(raw)
    original = BASE_VALUE[path] or {
        "extract.layers": ["stage1"],
        "analyze.sae_layers": ["embedding"],
        "shards.layers": ["embedding"],
        "slurm.extra": ["--qos=high"],
    }.get(path, [5])
    raw = copy.deepcopy(BASE)
    set_path(raw, path, [original[0], *original])
    with pytest.raises(ConfigError, match=path.replace(".", "[.]")):
        check_raw(raw)


SECTION_PATHS = sorted({p.rsplit(".", 1)[0] for p in FIELDS if "." in p} | {""})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(section=st.sampled_from(SECTION_PATHS),
       key=st.one_of(st.text(min_size=1, max_size=12), st.integers(), st.booleans()))  # fmt: skip
def test_an_unknown_key_in_any_section_is_one_line_naming_it(section, key):
    raw = copy.deepcopy(BASE)
    node = raw
    for part in filter(None, section.split(".")):
        node = node[part]
    if key in node or section in ("grid.alphas", "grid.axes"):
        return
    node[key] = 1
    try:
        check_raw(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "is not a known" in message, message
        return
    raise AssertionError(f"{section}.{key} was accepted")
