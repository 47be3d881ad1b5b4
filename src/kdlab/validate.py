"""Everything that can be known about params.yaml before any work: `kdlab check`, the `check`
stage that runs before every other stage of dvc.yaml, and `kdlab grid queue` / `slurm submit`.

DVC deletes a stage's outputs just before it runs the stage. A stage that refuses its params
then has already lost the last good results. So every stage of dvc.yaml depends on the output
of the `check` stage, which depends on every section and runs this module first: an invalid
value stops `dvc repro` / `dvc exp run` before any output is touched.

Beyond field-by-field validation (kdlab.config) it checks what needs the networks' shapes, which
kdlab.architectures computes without building them (no torch is imported): the selected
KD method against the teacher/student pair; every other method's own params too, where that
method could serve the pair (so `-S kd.method=fitnets` cannot turn a silent bad
`kd.fitnets.hint_layer` into a failed run); `extract.layers` and `analyze.sae_layers` against
the layers both networks have; and every grid point the same way (before anything is queued).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from kdlab.config import Params, params_from_dict, read_params_file
from kdlab.distill.spec import PairInfo, params_pair_shapes
from kdlab.distill.specs import get_spec, load_specs
from kdlab.errors import ConfigError
from kdlab.schema import load_yaml


def check_methods(params: Params, pair: PairInfo) -> None:
    """The selected method must serve the pair; every other method's params must be valid
    wherever that method could serve the pair with its defaults."""
    if params.kd.method != "none":
        get_spec(params.kd.method).check(params.kd.method_params, pair)
    for name, options in params.kd.options.items():
        if name == params.kd.method:
            continue
        spec = get_spec(name)
        try:
            spec.check(spec.params_cls(), pair)
        except ConfigError:
            continue  # the method cannot serve this pair at all: refused if it is selected
        spec.check(options, pair)


def check_layers(params: Params, teacher_layers: tuple, student_layers: tuple) -> None:
    """extract.layers must exist in both networks; analyze.sae_layers must be extracted."""
    shared = [name for name in teacher_layers if name in student_layers]
    for i, layer in enumerate(params.extract.layers):
        if layer not in shared:
            raise ConfigError(
                f"extract.layers[{i}] must be a layer of both the teacher "
                f"({params.teacher.arch}) and the student ({params.student.arch}): "
                f"one of {', '.join(shared)}; got {layer!r}"
            )
    extracted = list(params.extract.layers) or shared
    for i, layer in enumerate(params.analyze.sae_layers):
        if layer not in extracted:
            raise ConfigError(
                f"analyze.sae_layers[{i}] must be an extracted layer of both networks: "
                f"one of {', '.join(extracted)}; got {layer!r}"
            )


def check_params(params: Params) -> None:
    """What needs the networks' shapes (computed, not probed): KD methods against the pair,
    layer names."""
    pair, teacher_layers, student_layers = params_pair_shapes(params)
    if pair.student is None:  # one model: no student, so no KD method applies or is checked
        if params.kd.method == "ft":
            raise ConfigError("student.arch none trains no student, and kd.method ft would "
                              "train its paraphraser for nothing: set kd.method to any other "
                              "method (none, logit, ...)")  # fmt: skip
        check_single_layers(params, teacher_layers)
    else:
        check_methods(params, pair)
        check_layers(params, teacher_layers, student_layers)
    check_shards(params, teacher_layers, student_layers if pair.student is not None else None)
    check_case_studies(params)


def check_shards(params: Params, teacher_layers: tuple, student_layers: tuple | None) -> None:
    """shards.layers name layers of shards.model, which must be trained in this pipeline."""
    role = params.shards.model
    if role == "student" and student_layers is None:
        raise ConfigError("shards.model student: student.arch none trains no student; use "
                          "shards.model teacher (the one model)")  # fmt: skip
    layers = teacher_layers if role == "teacher" else student_layers
    arch = getattr(params, role).arch
    for i, layer in enumerate(params.shards.layers):
        if layer not in layers:
            raise ConfigError(f"shards.layers[{i}] must be a layer of the {role} ({arch}): one "
                              f"of {', '.join(layers)}; got {layer!r}")  # fmt: skip


def check_single_layers(params: Params, layers: tuple) -> None:
    """A study of one model: extract.layers and analyze.sae_layers name its layers."""
    for i, layer in enumerate(params.extract.layers):
        if layer not in layers:
            raise ConfigError(f"extract.layers[{i}] must be a layer of the model "
                              f"({params.teacher.arch}): one of {', '.join(layers)}; "
                              f"got {layer!r}")  # fmt: skip
    extracted = list(params.extract.layers) or list(layers)
    for i, layer in enumerate(params.analyze.sae_layers):
        if layer not in extracted:
            raise ConfigError(f"analyze.sae_layers[{i}] must be an extracted layer: one of "
                              f"{', '.join(extracted)}; got {layer!r}")  # fmt: skip


def check_case_studies(params: Params) -> None:
    """analyze.case_studies name classes of the dataset, as its files write them."""
    from kdlab.data.datasets import DATASETS

    classes = DATASETS[params.data.name].classes
    for i, name in enumerate(params.analyze.case_studies):
        if classes and name not in classes:
            raise ConfigError(f"analyze.case_studies[{i}] must be a class of {params.data.name}: "
                              f"one of {', '.join(classes)}; got {name!r}")  # fmt: skip


def with_overrides(raw: Mapping, overrides: tuple[tuple[str, str], ...]) -> dict:
    """`raw` with `-S key=value` overrides applied the way `dvc exp run -S` applies them."""
    result = copy.deepcopy(dict(raw))
    for key, value in overrides:
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = load_yaml(value)
    return result


def check_grid_points(raw: Mapping, experiments) -> None:
    """Every grid point, as its experiment would run: refuse the first that cannot, by name."""
    for exp in experiments:
        try:
            point = params_from_dict(with_overrides(raw, exp.overrides), load_specs())
            check_params(point)
        except ConfigError as exc:
            raise ConfigError(
                f"grid point {exp.name} ({' '.join(exp.set_params)}): {exc}"
            ) from None


def check_file(path: str | Path, *, grid_points: bool = True, device: bool = False) -> Params:
    """Validate params.yaml completely; returns the experiment's Params.

    The `grid:` and `slurm:` sections are always validated. `grid_points`: also every point of
    the grid, as its experiment would run (kdlab check, grid queue, slurm submit; not the
    `check` stage: an experiment run by hand, say with a ViT student, must not be refused
    because a grid point it is not would be). `device`: a requested CUDA device must be visible
    here (the `check` stage runs where the stages run).
    """
    return check_raw(read_params_file(path), grid_points=grid_points, device=device)


def check_raw(raw: Mapping, *, grid_points: bool = True, device: bool = False) -> Params:
    """`check_file` on params already parsed (what a `-S` override or a test builds)."""
    params = params_from_dict(raw, load_specs())
    check_params(params)
    check_sections(raw, grid_points)
    if device and params.device == "cuda":  # auto and cpu cannot be refused: no torch import
        from kdlab.training.seeding import resolve_device

        resolve_device(params.device)
    return params


def check_sections(raw: Mapping, grid_points: bool) -> None:
    """grid (and, with `grid_points`, each of its points) and slurm, when present."""
    from kdlab.grid import check_axes_exist, load_grid, plan_grid
    from kdlab.slurm.config import load_slurm_config

    if "grid" in raw:
        grid = load_grid(raw["grid"])
        check_axes_exist(raw, grid)
        if grid_points:
            from kdlab.config import is_one_model

            check_grid_points(raw, plan_grid(grid, is_one_model(raw)))
    if "slurm" in raw:
        load_slurm_config(raw["slurm"])
