"""How params are read and checked, for every section: YAML as DVC writes it, mappings built
into frozen dataclasses with field-named one-line errors, range and choice checks.

It imports nothing of kdlab's but the errors, so every module that declares params (the
config sections, each KD method's spec, the grid, slurm) depends on this file alone.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from kdlab.errors import ConfigError


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 integers.

    DVC rewrites params.yaml (`dvc exp run -S`) with ruamel.yaml, a YAML 1.2 writer, which leaves
    `time: 20:00` unquoted; PyYAML's YAML 1.1 rules would read that back as the integer 1200.
    """


def _without_base60(loader: type[yaml.SafeLoader]) -> None:
    import re

    kept = {
        first: [(tag, rx) for tag, rx in resolvers
                if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }  # fmt: skip
    loader.yaml_implicit_resolvers = kept
    # PyYAML's own int and float patterns, minus their base-60 alternatives, plus YAML 1.2's
    # floats without a dot (1e-07: what JSON and Python write), which YAML 1.1 reads as strings.
    int_rx = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)
                            |[-+]?0x[0-9a-fA-F_]+)$""", re.X)  # fmt: skip
    float_rx = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                              |\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)
                              |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                              |\.(?:nan|NaN|NAN))$""", re.X)  # fmt: skip
    loader.add_implicit_resolver("tag:yaml.org,2002:int", int_rx, list("-+0123456789"))
    loader.add_implicit_resolver("tag:yaml.org,2002:float", float_rx, list("-+0123456789."))


_without_base60(_Yaml12Loader)


def load_yaml(text: str) -> Any:
    """Parse params YAML the way DVC writes it (no sexagesimal numbers)."""
    return yaml.load(text, Loader=_Yaml12Loader)


def key_text(key: Any) -> str:
    """A params key in a message: as written, or its repr when it would not read as one line."""
    if isinstance(key, str) and key.isprintable() and key.strip() == key and key:
        return key
    return repr(key)


def nearest(name: Any, valid: typing.Iterable[str]) -> str:
    """` (did you mean lr?)` for a typo close to one valid name, else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(item, _type_name(item))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Return `value` checked (and minimally converted) against the annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        # bool is an int in Python: `true` must not match a Literal[1].
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise ConfigError(f"{path} must be {_type_name(tp)}, got {_value_text(value)}")
    if origin in (typing.Union, types.UnionType):
        inner = None
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, path)
            except ConfigError as exc:
                # An arm whose shape fits (a list for a list type) names the entry at fault.
                if inner is None and str(exc).startswith((f"{path}[", f"{path}.")):
                    inner = exc
        if inner is not None:
            raise inner
        raise ConfigError(f"{path} must be {_type_name(tp)}, got {_value_text(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be {_type_name(tp)}, got {_value_text(value)}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path} must be a finite number, got {_num_text(value)}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{path} must be {_type_name(tp)}, got {_value_text(value)}")


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    """Build the frozen dataclass `cls` from the mapping `raw`; `path` names it in errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {_value_text(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"{path}.{key_text(unknown[0])} is not a known key{nearest(unknown[0], fields)}; "
            f"valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in raw:
            kwargs[name] = coerce(raw[name], hints[name], f"{path}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name} is required ({_type_name(hints[name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def check_range(
    path: str, value: float, low: float, high: float, *, low_open=False, high_open=False
):
    """Raise ConfigError unless low <= value <= high (with optional open ends); NaN is in no
    range (every comparison with it is false, so it would pass the bounds unseen)."""
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{path} must be a finite number, got nan")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ConfigError(
            f"{path} must be in {lb}{_num(low)}, {_num(high)}{rb}, got {_value_text(value)}"
        )


def _num_text(value: float) -> str:
    """NaN and infinities as Python prints them (nan, inf, -inf)."""
    return "nan" if math.isnan(value) else repr(value)


def _value_text(value: Any) -> str:
    """A value in a one-line message: its repr, cut short (a 10,000-entry list is not a line)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_finite(path: str, value: Any) -> None:
    """Refuse NaN or an infinity anywhere in `value` (a number, or lists and mappings of them),
    naming where: values that are not coerced through a float field (grid axes) need this."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {_num_text(value)}")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_finite(f"{path}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_finite(f"{path}.{key}", item)


def check_items(path: str, values: typing.Sequence, *, unique: bool = True) -> None:
    """A list that something needs at least one entry of (kd.at.stages, analyze.sae_layers):
    refuse it empty, or (with `unique`) naming an entry twice."""
    if not values:
        raise ConfigError(f"{path} must list at least one entry, got []")
    if unique:
        seen = set()
        for value in values:
            if value in seen:
                raise ConfigError(f"{path} lists {value!r} twice: {list(values)}")
            seen.add(value)


def _num(value: float) -> str:
    """Bounds as people write them: 4294967295, not 4.29497e+09; 0.5, not 0.500000."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def check_choice(path: str, value: str, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{path} must be one of {', '.join(choices)}, got {_value_text(value)}")
