"""Analysis measures, registered by name; `analyze` is a loop over them.

A measure is one module of this package that registers a function with `@register_measure`:

- scope "layer": called for each cached (role, layer) of both networks;
- scope "pair": called for each layer the teacher and the student share;
- scope "run": called once (measures over logits, over every layer at once, over milestones).

Each call gets the `Inputs` (the activation cache as float64 tensors on the device, the test
labels, `analyze:` params, the seed) and returns an `Output`: scalars for
metrics/analysis.json (flat, readable keys, so `dvc exp show` is a usable table), rows for
plots/data/<name>.json (what `dvc plots` draws) and figures drawn from those rows as
plots/figures/<name>.png. Measures run in (`order`, name) order; a measure with a higher
`order` may read the metrics of those before it (`Inputs.metrics`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from kdlab.config import AnalyzeConfig
from kdlab.extract.activations import ActivationCache

DYNAMIC_IMPORTS = ("kdlab.analysis.measures",)
"""Packages whose every module `load_measures` imports by name (read by kdlab.codedeps)."""

log = logging.getLogger(__name__)

Scope = Literal["layer", "pair", "run"]
Draw = Callable[[list[dict], Path], None]


@dataclasses.dataclass
class Inputs:
    """What every measure reads: both networks' cached activations on the same test samples."""

    cache: ActivationCache
    acts: dict[tuple[str, str], torch.Tensor]
    """(role, layer) -> float64 activations (n, ...) on the device, teacher's layers first."""
    labels: torch.Tensor
    """Test labels of the cached samples."""
    shared: list[str]
    """Layers both networks have (in the teacher's order)."""
    cfg: AnalyzeConfig
    seed: int
    device: torch.device
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """The metrics of the measures that ran before (lower `order`)."""

    def layers(self, role: str) -> list[str]:
        return [layer for r, layer in self.acts if r == role]


@dataclasses.dataclass
class Output:
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    plots: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    """plots/data/<name>.json rows; rows of the same name from several calls are concatenated."""
    figures: dict[str, tuple[str, Draw]] = dataclasses.field(default_factory=dict)
    """plots/figures/<name>.png -> (the plot rows it is drawn from, draw(rows, path))."""


@dataclasses.dataclass(frozen=True)
class Measure:
    name: str
    scope: Scope
    compute: Callable[..., Output]
    order: int = 0


MEASURES: dict[str, Measure] = {}


def register_measure(name: str, scope: Scope, order: int = 0):
    """Decorator: `compute(inputs, role, layer)` (layer), `(inputs, layer)` (pair) or
    `(inputs)` (run), returning an Output."""

    def decorate(compute: Callable[..., Output]) -> Callable[..., Output]:
        if name in MEASURES:
            raise RuntimeError(f"analysis measure {name!r} registered twice")
        MEASURES[name] = Measure(name, scope, compute, order)
        return compute

    return decorate


def load_measures() -> list[Measure]:
    """Every measure, in the order they run."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(MEASURES.values(), key=lambda m: (m.order, m.name))


@dataclasses.dataclass
class Analysis:
    metrics: dict[str, float]
    plots: dict[str, list[dict]]
    figures: dict[str, tuple[str, Draw]]


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64)).to(device)


def read_inputs(cache: ActivationCache, cfg: AnalyzeConfig, seed: int,
                device: torch.device) -> Inputs:  # fmt: skip
    t_layers, s_layers = cache.layers("teacher"), cache.layers("student")
    acts = {(role, layer): as_tensor(cache.get(role, layer), device)
            for role, layers in (("teacher", t_layers), ("student", s_layers))
            for layer in layers}  # fmt: skip
    labels = torch.from_numpy(cache.labels).to(device)
    shared = [layer for layer in t_layers if layer in s_layers]
    return Inputs(cache, acts, labels, shared, cfg, seed, device)


def calls(measure: Measure, inputs: Inputs) -> list[tuple]:
    """The arguments of each call of `measure` after `inputs`."""
    if measure.scope == "layer":  # layer by layer (teacher's order first), teacher then student
        layers = dict.fromkeys(layer for _role, layer in inputs.acts)
        return [(role, layer) for layer in layers for role in ("teacher", "student")
                if (role, layer) in inputs.acts]  # fmt: skip
    if measure.scope == "pair":
        return [(layer,) for layer in inputs.shared]
    return [()]


def analyze_cache(cache: ActivationCache, cfg: AnalyzeConfig, seed: int,
                  device: torch.device) -> Analysis:  # fmt: skip
    """Every registered measure on the cache: the metrics, plot rows and figures."""
    inputs = read_inputs(cache, cfg, seed, device)
    result = Analysis({}, {}, {})
    for measure in load_measures():
        for args in calls(measure, inputs):
            merge(result, measure.compute(inputs, *args), measure.name)
        inputs.metrics = dict(result.metrics)
    return result


def merge(result: Analysis, out: Output, name: str) -> None:
    clash = set(out.metrics) & set(result.metrics)
    if clash:
        raise RuntimeError(f"measure {name} writes metrics another wrote: {sorted(clash)}")
    result.metrics.update(out.metrics)
    for plot, rows in out.plots.items():
        result.plots.setdefault(plot, []).extend(rows)
    result.figures.update(out.figures)


def write_plot_data(result: Analysis, data_dir: Path) -> None:
    """JSON row files that dvc.yaml declares as plots (dvc plots show / diff)."""
    import json

    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in result.plots.items():
        (data_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))


def write_figures(result: Analysis, figures_dir: Path) -> list[Path]:
    figures_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (plot, draw) in sorted(result.figures.items()):
        path = figures_dir / f"{name}.png"
        draw(result.plots.get(plot, []), path)
        made.append(path)
    return made
