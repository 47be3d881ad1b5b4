"""Presets: a YAML file of params (a subset of params.yaml's keys) written into params.yaml.

`kdlab preset configs/fashion-mnist-kd.yaml` merges the preset into params.yaml, keeping its
comments and every key the preset does not name, after validating the result exactly as
`kdlab check` would (every grid point included). A key params.yaml does not have is refused
(a typo is not a new param); nothing is written unless the merged file is valid.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kdlab.errors import ConfigError
from kdlab.fsutil import temp_directory, write_bytes_atomic


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments and key order survive
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


WHOLE = {"grid.axes", "grid.alphas"}
"""Values a preset replaces whole, whatever their form (a list or a mapping of free keys)."""


def merge(target: Any, preset: Mapping, path: str = "") -> list[str]:
    """Write `preset`'s values into `target` in place; returns the changed keys."""
    changed = []
    for key, value in preset.items():
        where = f"{path}{key}"
        if not isinstance(target, Mapping) or key not in target:
            raise ConfigError(f"preset key {where} is not a param of params.yaml")
        if where in WHOLE and key in target:
            if target[key] != value:
                if hasattr(value, "fa"):
                    value.fa.set_flow_style()  # one line: the key's comment stays on it
                target[key] = value
                changed.append(where)
        elif isinstance(value, Mapping):
            if not isinstance(target[key], Mapping):
                raise ConfigError(f"preset key {where} is a section, but params.yaml's is a value")
            changed += merge(target[key], value, where + ".")
        elif isinstance(target[key], Mapping):
            raise ConfigError(f"preset key {where} must be a section (it is one in params.yaml)")
        elif target[key] != value:
            target[key] = value
            changed.append(where)
    return changed


def apply_preset(preset_path: Path, params_path: Path) -> list[str]:
    """Merge the preset into params.yaml if the result is valid; returns the changed keys."""
    from kdlab.validate import check_file

    if not preset_path.is_file():
        raise ConfigError(f"preset {preset_path} does not exist (presets are under configs/)")
    yaml = _yaml()
    try:
        preset = yaml.load(preset_path.read_text())
    except Exception as exc:  # ruamel's errors have no common base worth naming
        raise ConfigError(f"preset {preset_path} is not valid YAML: {exc}") from None
    if not isinstance(preset, Mapping):
        raise ConfigError(f"preset {preset_path} must be a mapping of params")
    params = yaml.load(params_path.read_text())
    changed = merge(params, preset)
    buffer = io.StringIO()
    yaml.dump(params, buffer)
    text = buffer.getvalue().encode()
    with temp_directory(params_path.parent, f"{params_path.name}-preset") as tmp:
        candidate = tmp / params_path.name
        candidate.write_bytes(text)
        try:
            check_file(candidate)
        except ConfigError as exc:
            raise ConfigError(f"{preset_path} would make params.yaml invalid: {exc}") from None
    write_bytes_atomic(params_path, text)
    return changed
