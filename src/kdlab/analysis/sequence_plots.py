"""Figures for people (PNG) of what a sequence transformer's heads do with time, each drawn from
the plot rows `dvc plots` reads (lists of dicts; see `sequence_attention` for the measures)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt
import numpy as np

from kdlab.analysis.plots import in_order

MAX_SAMPLES = 6  # panels of cross_attention_over_time
SAMPLE_COLUMNS = 3
MODULE_COLUMNS = 4  # panels per row of heads_by_milestone
CELL_TEXT_LIMIT = (12, 8)  # heads × epochs up to which heads_by_milestone writes the values


def edges_of(centres: list[float], low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """(len + 1,) cell edges around sorted bin centres: midway between neighbours, and the ends
    mirrored about the outer centres (clipped to [low, high])."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([low, high])
    mid = (c[1:] + c[:-1]) / 2
    first, last = max(low, c[0] - (mid[0] - c[0])), min(high, c[-1] + (c[-1] - mid[-1]))
    return np.concatenate([[first], mid, [last]])


def panel_grid(panels: int, columns: int, width: float, height: float):
    """A constrained-layout figure of ⌈panels / columns⌉ × min(panels, columns) axes, the unused
    ones hidden; returns (figure, the used axes in reading order)."""
    cols = max(1, min(panels, columns))
    nrows = max(1, math.ceil(panels / cols))
    size = (width * cols + 1.4, height * nrows + 0.8)
    fig, axes = plt.subplots(nrows, cols, squeeze=False, figsize=size, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def head_ticks(ax, heads: list) -> None:
    """Every head on the y axis (every other past 16), head 0 at the top."""
    step = 1 if len(heads) <= 16 else 2
    ax.set_yticks(range(0, len(heads), step), [str(h) for h in heads[::step]])


def cross_attention_over_time(rows: list[dict], path: Path) -> None:
    """rows: {sample, class, module, head, time (bin centre in [0, 1]), weight}: the class query's
    cross-attention over normalised time, one heads × time heatmap per sample (the first 6 in
    order of appearance), of the LAST module in order of appearance (the decoder's last layer
    when rows come in model order); one colour scale, from 0, for all panels."""
    module = in_order(r["module"] for r in rows)[-1]
    mine = [r for r in rows if r["module"] == module]
    samples = in_order(r["sample"] for r in mine)[:MAX_SAMPLES]
    heads = sorted(in_order(r["head"] for r in mine))
    times = sorted(in_order(r["time"] for r in mine))
    classes = {r["sample"]: r["class"] for r in mine}
    head_index = {h: i for i, h in enumerate(heads)}
    time_index = {t: i for i, t in enumerate(times)}
    high = max(r["weight"] for r in mine) or 1.0
    x_edges = edges_of(times)
    y_edges = np.arange(len(heads) + 1) - 0.5
    fig, axes = panel_grid(len(samples), SAMPLE_COLUMNS, 3.6, 0.28 * len(heads) + 1.5)
    mesh = None
    for ax, sample in zip(axes, samples, strict=True):
        grid_ht = np.full((len(heads), len(times)), np.nan)
        for r in mine:
            if r["sample"] == sample:
                grid_ht[head_index[r["head"]], time_index[r["time"]]] = r["weight"]
        mesh = ax.pcolormesh(x_edges, y_edges, grid_ht, cmap="magma", vmin=0.0, vmax=high)
        ax.set_ylim(y_edges[-1], y_edges[0])  # head 0 on top
        head_ticks(ax, heads)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", ".25", ".5", ".75", "1"])
        ax.set_title(f"sample {sample} · class {classes[sample]}", fontsize=10)
        ax.set_xlabel("normalised time")
        ax.set_ylabel("head")
    fig.colorbar(mesh, ax=axes, label="attention", shrink=0.9)
    fig.suptitle(f"Class-query cross-attention over time ({module})")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cell_text(value: float) -> str:
    """A heatmap cell's value in a few characters, never a misleading 0.00: small values (a
    Jensen–Shannon change of 3e-4 nats) keep two significant digits."""
    if not math.isfinite(value):
        return ""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.1e}".replace("e-0", "e-")
    if abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def heads_by_milestone(measure: str, label: str) -> Callable[[list[dict], Path], None]:
    """A drawer of rows {epoch, module, head, <measure>, ...}: one heads × milestone-epoch heatmap
    of `measure` per module (in order of appearance, up to 4 panels a row), one colour scale for
    all, the values written in the cells when there are ≤ 12 heads and ≤ 8 epochs."""

    def draw(rows: list[dict], path: Path) -> None:
        # only the modules the measure applies to (a read position has no encoder panel)
        modules = in_order(r["module"] for r in rows if r.get(measure) is not None)
        epochs = sorted(in_order(r["epoch"] for r in rows))
        heads = sorted(in_order(r["head"] for r in rows))
        head_index = {h: i for i, h in enumerate(heads)}
        epoch_index = {e: i for i, e in enumerate(epochs)}
        values = [float(r[measure]) for r in rows if r.get(measure) is not None]
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        low, high = min(finite), max(finite)
        if low == high:  # a constant measure: a scale around it, not a singular one
            low, high = low - 0.5, high + 0.5
        write = len(heads) <= CELL_TEXT_LIMIT[0] and len(epochs) <= CELL_TEXT_LIMIT[1]
        width = max(2.6, 0.48 * len(epochs) + 1.0)
        fig, axes = panel_grid(len(modules), MODULE_COLUMNS, width, 0.3 * len(heads) + 1.4)
        image = None
        for ax, module in zip(axes, modules, strict=True):
            grid_he = np.full((len(heads), len(epochs)), np.nan)
            for r in rows:
                if r["module"] == module and r.get(measure) is not None:
                    grid_he[head_index[r["head"]], epoch_index[r["epoch"]]] = float(r[measure])
            image = ax.imshow(grid_he, cmap="viridis", vmin=low, vmax=high, aspect="auto",
                              interpolation="nearest")  # fmt: skip
            if write:
                for (i, j), value in np.ndenumerate(grid_he):
                    dark = (value - low) / (high - low) < 0.6 if math.isfinite(value) else False
                    ax.text(j, i, cell_text(value), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")  # fmt: skip
            ax.set_xticks(range(len(epochs)), [str(e) for e in epochs],
                          rotation=0 if len(epochs) <= 8 else 45)  # fmt: skip
            head_ticks(ax, heads)
            ax.set_title(module, fontsize=10)
            ax.set_xlabel("epoch (milestones)")
            ax.set_ylabel("head")
        fig.colorbar(
            image, ax=axes, label=measure.replace("_", " "), shrink=0.9
        )  # the title says it whole
        fig.suptitle(label)
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return draw
