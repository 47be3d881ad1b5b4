"""Figures for people (PNG) and plot data for `dvc plots` (JSON rows), from an Analysis."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt

from kdlab.analysis.pipeline import Analysis


def cka_heatmap(result: Analysis, path: Path) -> None:
    matrix = result.cka
    fig, ax = plt.subplots(figsize=(1.3 * len(result.cka_student_layers) + 2.5,
                                    1.1 * len(result.cka_teacher_layers) + 1.5))  # fmt: skip
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(result.cka_student_layers)), result.cka_student_layers)
    ax.set_yticks(range(len(result.cka_teacher_layers)), result.cka_teacher_layers)
    ax.set_xlabel("student layer")
    ax.set_ylabel("teacher layer")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                    color="white" if value < 0.6 else "black", fontsize=9)  # fmt: skip
    fig.colorbar(image, ax=ax, label="linear CKA")
    ax.set_title("Teacher × student CKA")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pca_spectra(result: Analysis, path: Path) -> None:
    layers = list(result.spectra)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for role, ratios in result.spectra[layer].items():
            ax.semilogy(range(1, len(ratios) + 1), ratios, label=role, marker=".", markersize=3)
        ax.set_title(layer)
        ax.set_xlabel("principal component")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("explained variance ratio")
    axes[0][0].legend()
    fig.suptitle("PCA spectra")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_bars(result: Analysis, path: Path) -> None:
    rows = result.layer_rows
    layers = [r["layer"] for r in rows]
    x = range(len(layers))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].bar(x, [r["cka"] for r in rows], color="tab:green")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("CKA teacher vs student")
    axes[0].set_ylabel("linear CKA")
    for ax, metric, title, ylabel in (
        (axes[1], "effdim", "effective dimensionality (PR)", "participation ratio"),
        (axes[2], "fisher", "Fisher criterion", "between / within class variance"),
    ):
        width = 0.4
        ax.bar([i - width / 2 for i in x], [r[f"{metric}_teacher"] for r in rows], width,
               label="teacher")  # fmt: skip
        ax.bar([i + width / 2 for i in x], [r[f"{metric}_student"] for r in rows], width,
               label="student")  # fmt: skip
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend()
    for ax in axes:
        ax.set_xticks(list(x), layers)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cka_over_training(result: Analysis, path: Path) -> None:
    rows = result.cka_by_epoch
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    # distinct markers and dashes: layers with (nearly) equal CKA stay visible on each other
    styles = zip("osD^v<>", ["-", "--", "-.", ":"] * 2, [8, 7, 6, 5, 5, 5, 5], strict=False)
    for layer, (marker, dash, size) in zip([k for k in rows[0] if k != "epoch"], styles,
                                           strict=False):  # fmt: skip
        ax.plot(epochs, [r[layer] for r in rows], marker=marker, linestyle=dash, markersize=size,
                label=layer, alpha=0.85)  # fmt: skip
    ax.set_xticks(epochs)  # the milestones themselves, not 12.5 and 17.5
    ax.set_xlabel("student epoch (milestones)")
    ax.set_ylabel("CKA with the final teacher")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), title="layer")  # off the data
    ax.set_title("Alignment over training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plot_data(result: Analysis, data_dir: Path) -> None:
    """JSON row files that dvc.yaml declares as plots (dvc plots show / diff)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "layers.json").write_text(json.dumps(result.layer_rows, indent=1))
    (data_dir / "cka_by_epoch.json").write_text(json.dumps(result.cka_by_epoch, indent=1))
    spectrum_rows = []
    for layer, roles in result.spectra.items():
        for role, ratios in roles.items():
            spectrum_rows += [{"component": i + 1, "series": f"{role}/{layer}", "explained": r}
                              for i, r in enumerate(ratios)]  # fmt: skip
    (data_dir / "pca_spectra.json").write_text(json.dumps(spectrum_rows, indent=1))
    cka_rows = [{"teacher_layer": t, "student_layer": s, "cka": result.cka[i][j]}
                for i, t in enumerate(result.cka_teacher_layers)
                for j, s in enumerate(result.cka_student_layers)]  # fmt: skip
    (data_dir / "cka_matrix.json").write_text(json.dumps(cka_rows, indent=1))


def write_figures(result: Analysis, figures_dir: Path) -> list[Path]:
    figures_dir.mkdir(parents=True, exist_ok=True)
    made = []
    figures = {"cka_heatmap": cka_heatmap, "pca_spectra": pca_spectra, "layers": layer_bars,
               "cka_over_training": cka_over_training}  # fmt: skip
    for name, draw in figures.items():
        if name == "cka_over_training" and len(result.cka_by_epoch) < 2:
            continue  # no milestones: nothing to draw over time
        draw(result, figures_dir / f"{name}.png")
        made.append(figures_dir / f"{name}.png")
    return made
