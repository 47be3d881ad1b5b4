"""What the `check` stage makes sure of before DVC deletes any stage's outputs, beyond the params'
values (kdlab.validate): every params key a stage of dvc.yaml names is in params.yaml, every
output can be replaced, and the disk has room for what the run writes.

DVC removes a stage's outputs just before running it, then fails on a missing param ("Parameters
... are missing"), a read-only directory ("Permission denied") or a full disk ("unexpected error")
with the last good results already gone. `check` runs first in every `dvc repro` and `dvc exp run`
(dvc.yaml: always_changed, its output the same bytes whenever it passes, so it reruns nothing by
itself), so each of these is refused here in one line, with everything in place.

Torch-free: the sizes come from the computed shapes (kdlab.architectures), not built networks.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kdlab.config import NO_STUDENT, Params
from kdlab.errors import ConfigError
from kdlab.fsutil import WriteError
from kdlab.pipeline import _interpolate, _lookup, load_stages
from kdlab.schema import load_yaml

SAFETY_FACTOR = 2
"""Every cached output is written twice (the workspace and DVC's cache), hence at least 2×."""


def stage_param_keys(stages: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(stage, params.yaml key) for every key a stage names (a whole file = no single key)."""
    for stage, body in stages.items():
        for entry in body.get("params", []) or []:
            if isinstance(entry, str):
                yield stage, entry
            elif isinstance(entry, Mapping):
                for file, keys in entry.items():
                    if file == "params.yaml":
                        for key in keys or []:
                            yield stage, key


def check_params_present(raw: Mapping, stages: Mapping[str, Any]) -> None:
    """Every key a stage's `params:` names exists in params.yaml (DVC would fail after deleting
    that stage's outputs); defaults do not count, since DVC compares the file."""
    for stage, key in stage_param_keys(stages):
        found, _ = _lookup(raw, key)
        if not found:
            raise ConfigError(
                f"params.yaml has no {key}, which stage {stage} of dvc.yaml reads: add it back "
                "(`git checkout params.yaml` restores the committed file)"
            )


def stage_output_paths(stages: Mapping[str, Any], raw: Mapping) -> list[str]:
    """Every path a stage writes: its outs, metrics and plots, and its resume checkpoint."""
    paths = []
    for body in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []) or []:
                paths.append(next(iter(entry)) if isinstance(entry, Mapping) else entry)
        words = shlex.split(_interpolate(" ".join(str(body.get("cmd", "")).split()), raw))
        paths += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--resume"]
    return [_interpolate(p, raw) for p in dict.fromkeys(paths)]


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _probe_writable(directory: Path) -> OSError | None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".kdlab-preflight."):
            pass
    except OSError as exc:
        return exc
    return None


def check_outputs_writable(root: Path, outputs: list[str]) -> None:
    """DVC must be able to delete each output and the stage to write it: its directory (or the
    nearest one that exists) and every directory inside an existing output take a new file."""
    for rel in outputs:
        path = root / rel
        places = [_existing_ancestor(path.parent)]
        if path.is_dir():
            places += [path, *(p for p in path.rglob("*") if p.is_dir())]
        for place in places:
            error = _probe_writable(place)
            if error is not None:
                cause = os.strerror(error.errno) if error.errno else str(error)
                raise WriteError(
                    f"cannot write {place.relative_to(root) if place != root else '.'} "
                    f"(for {rel}): {cause.lower()}; nothing was removed: make it writable "
                    "and run again"
                )


def _param_count(arch: str, size: dict | None = None) -> int:
    """Parameters of a network, estimated from its registered config (with `<role>.size`): 3×3
    convolutions for the residual families, attention + MLP blocks for ViTs (biases and norms
    are noise here)."""
    from kdlab.architectures import get_arch, sized_config

    if arch == NO_STUDENT:  # a study of one model
        return 0
    spec = get_arch(arch)
    config = sized_config(arch, size)
    if spec.family == "spoter":  # attention (4 d²) and feed-forward (2 d·ff) per layer
        layers = config["encoder_layers"] + config["decoder_layers"]
        # + the head (100 classes), positions and frame projection, as the families above
        extra = 164 * config["dim"]
        return layers * (4 * config["dim"] ** 2 + 2 * config["dim"] * config["ff_dim"]) + extra
    if spec.family not in ("resnet", "wrn", "vit"):  # a family added later: from its shapes
        shapes = spec.shapes(config, 100, 32)
        return sum(18 * dims[0] ** 2 if len(dims) == 3 else 12 * dims[-1] ** 2
                   for dims in shapes.stages.values()) + 100 * shapes.embedding_dim  # fmt: skip
    if "dim" in config:  # vit
        return config["depth"] * (4 * config["dim"] ** 2 + 2 * config["dim"] * config["mlp_dim"])
    if "widths" in config:  # resnet: depth = 6n + 2
        widths, blocks = config["widths"], (config["depth"] - 2) // 6
    else:  # wrn: depth = 6n + 4
        from kdlab.architectures.wrn import wrn_widths

        widths, blocks = wrn_widths(config["widen"]), (config["depth"] - 4) // 6
    return sum(2 * blocks * 9 * c * c for c in widths[1:]) + 9 * 3 * widths[0]


def estimate_output_bytes(params: Params) -> dict[str, int]:
    """A generous estimate of what one whole run writes, per output directory: the dataset
    arrays (and their downloads), each network's checkpoints (final, milestones, the resume
    checkpoint with its optimizer state), the activations `extract` caches (final and
    milestones); times SAFETY_FACTOR for DVC's cache copy."""
    from kdlab.data.datasets import DATASETS
    from kdlab.distill.spec import params_pair_shapes

    spec = DATASETS[params.data.name]
    sizes = {f"data/{params.data.name}": spec.sample_bytes * spec.train_size * 2}
    for role, cfg in (("teacher", params.teacher), ("student", params.student)):
        weights = 4 * _param_count(cfg.arch, cfg.size)
        sizes[f"models/{role}"] = weights * (1 + len(cfg.save_epochs) + 3)
    pair, teacher_layers, student_layers = params_pair_shapes(params)
    if pair.student is None:  # a study of one model
        layers = params.extract.layers or list(teacher_layers)
    else:
        layers = params.extract.layers or [n for n in teacher_layers if n in student_layers]
    per_sample = 0
    for info in filter(None, (pair.teacher, pair.student)):
        for layer in layers:
            per_sample += math.prod(info.stages.get(layer, (info.embedding_dim,)))
        if params.extract.attention and spec.kind == "sequence":  # (heads, Q, T) per module
            frames = spec.sequence_shape[0]
            per_sample += sum(heads * (frames if name.startswith("encoder.") else 1) * frames
                              for name, heads in zip(info.stages, info.attention_heads,
                                                     strict=True))  # fmt: skip
    itemsize = 2 if params.extract.dtype == "float16" else 4
    snapshots = 1 + (len(params.student.save_epochs) if params.extract.milestones else 0)
    sizes["data/activations"] = params.extract.n_samples * per_sample * itemsize * snapshots
    return {rel: SAFETY_FACTOR * size + (1 << 20) for rel, size in sizes.items()}


def check_free_space(root: Path, outputs: list[str], needed: Mapping[str, int]) -> None:
    """Each file system that holds outputs has room for the estimate of the outputs on it
    (counting what those outputs take now: the run replaces them)."""
    by_device: dict[int, tuple[Path, int]] = {}
    for rel, size in needed.items():
        where = _existing_ancestor(root / rel)
        device = where.stat().st_dev
        first, total = by_device.get(device, (where, 0))
        by_device[device] = (first, total + size)
    reclaimed: dict[int, int] = {}
    for rel in outputs:
        path = root / rel
        if path.exists():
            device = path.stat().st_dev
            reclaimed[device] = reclaimed.get(device, 0) + _size(path)
    for device, (where, total) in by_device.items():
        free = shutil.disk_usage(where).free
        if free + reclaimed.get(device, 0) < total:
            shown = where.relative_to(root) if where != root else Path(".")
            raise WriteError(
                f"not enough disk space for this run on {shown}: {free / 2**20:.2f} MiB free, "
                f"the run writes about {total / 2**20:.2f} MiB there (with DVC's cache copy); "
                "nothing was removed: free space (or `dvc gc`) and run again"
            )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def preflight(raw: Mapping, params: Params, root: Path, dvc_yaml: Path) -> None:
    """Everything above, in the order a user would fix it."""
    stages = load_stages(dvc_yaml)
    check_params_present(raw, stages)
    outputs = stage_output_paths(stages, raw)
    check_outputs_writable(root, outputs)
    check_free_space(root, outputs, estimate_output_bytes(params))
    check_external(root, params)


def check_external(root: Path, params: Params) -> None:
    """external.path exists and is the file external.sha256 names, before DVC removes the
    teacher stage's outputs to import it."""
    from kdlab.checksum import sha256_file

    ext = params.external
    if not ext.path:
        return
    path = root / ext.path
    if not path.is_file():
        raise ConfigError(f"external.path {ext.path} does not exist (a path relative to the "
                          "repository, or absolute)")  # fmt: skip
    actual = sha256_file(path)
    if actual != ext.sha256:
        raise ConfigError(f"external.path {ext.path} has sha256 {actual}, but external.sha256 "
                          f"is {ext.sha256}: not the file the params name")  # fmt: skip
    if not Path(ext.path).is_absolute() and untracked_by_git(root, ext.path):
        raise ConfigError(f"external.path {ext.path} is relative and not tracked by git: a "
                          f"queued experiment (dvc exp run --queue, a grid, SLURM) runs in a "
                          f"copy of the repository without it; give its absolute path "
                          f"({path.resolve()}) or `git add` it")  # fmt: skip


def untracked_by_git(root: Path, relative: str) -> bool:
    """Whether `relative` is a file git does not track in the repository at `root` (False
    outside a git repository: nothing is copied then)."""
    import subprocess

    proc = subprocess.run(["git", "ls-files", "--error-unmatch", "--", relative], cwd=root,
                          capture_output=True, text=True)  # fmt: skip
    return proc.returncode != 0 and "not a git repository" not in proc.stderr


def dropped_outputs(root: Path, raw: Mapping, dvc_yaml: Path) -> list[str]:
    """Outputs dvc.lock records that the workspace lacks and that the pipeline, with these
    params, no longer names: what `dvc exp run` removes before the first stage runs (its
    checkout drops such outputs, e.g. data/digits for `-S data.name=mnist`)."""
    try:
        lock = load_yaml((root / "dvc.lock").read_text()) or {}
        named = set(stage_output_paths(load_stages(dvc_yaml), raw))
    except (OSError, ValueError, ConfigError):
        return []
    dropped = []
    for stage in (lock.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            path = out.get("path") if isinstance(out, Mapping) else None
            if path and path not in named and not (root / path).exists() and path not in dropped:
                dropped.append(path)
    return dropped


def restore_advice(root: Path, raw: Mapping, dvc_yaml: Path) -> str:
    """How to get back what DVC removed before a refused run ("" when it removed nothing)."""
    dropped = dropped_outputs(root, raw, dvc_yaml)
    if not dropped:
        return ""
    return (
        f"; DVC removed {', '.join(dropped)} before this check (it is no output of these "
        "params): `git checkout params.yaml && dvc checkout` brings it back"
    )
