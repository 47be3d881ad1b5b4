"""Figures for people (PNG), each drawn from the plot rows `dvc plots` reads (plots/data/)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt


def in_order(values) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def cka_heatmap(rows: list[dict], path: Path) -> None:
    """rows: {teacher_layer, student_layer, cka}."""
    t_layers = in_order(r["teacher_layer"] for r in rows)
    s_layers = in_order(r["student_layer"] for r in rows)
    value = {(r["teacher_layer"], r["student_layer"]): r["cka"] for r in rows}
    matrix = [[value[t, s] for s in s_layers] for t in t_layers]
    fig, ax = plt.subplots(figsize=(1.3 * len(s_layers) + 2.5, 1.1 * len(t_layers) + 1.5))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(s_layers)), s_layers)
    ax.set_yticks(range(len(t_layers)), t_layers)
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


def pca_spectra(rows: list[dict], path: Path) -> None:
    """rows: {component, series: "<role>/<layer>", explained}."""
    spectra: dict[str, dict[str, list[float]]] = {}
    for series in in_order(r["series"] for r in rows):
        role, layer = series.split("/", 1)
        spectra.setdefault(layer, {})[role] = [r["explained"] for r in rows
                                               if r["series"] == series]  # fmt: skip
    layers = list(spectra)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for role, ratios in spectra[layer].items():
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


def layer_bars(rows: list[dict], path: Path) -> None:
    """rows: {layer, cka, effdim_teacher, effdim_student, fisher_teacher, fisher_student}."""
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


def cka_over_training(rows: list[dict], path: Path) -> None:
    """rows: {epoch, <layer>: CKA with the final teacher, ...}."""
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


def attention_heads(rows: list[dict], path: Path) -> None:
    """rows: {role, layer, head, entropy, distance, cls}: each head's mean attention distance
    against its entropy, teacher and student side by side, coloured by depth."""
    roles = in_order(r["role"] for r in rows)
    layers = sorted(in_order(r["layer"] for r in rows), key=lambda name: int(name[5:]))
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    fig, axes = plt.subplots(1, len(roles), figsize=(5.2 * len(roles), 4.2), squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    handles = {}
    for ax, role in zip(axes[0], roles, strict=True):
        for i, layer in enumerate(layers):
            mine = [r for r in rows if r["role"] == role and r["layer"] == layer]
            if mine:
                handles[layer] = ax.scatter(
                    [r["entropy"] for r in mine], [r["distance"] for r in mine], s=36,
                    color=cmap(i), label=layer, edgecolor="black", linewidth=0.4,
                )  # fmt: skip
        ax.set_title(f"{role}: one dot per head")
        ax.set_xlabel("attention entropy (nats)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean attention distance (patches)")
    ordered = [handles[layer] for layer in layers if layer in handles]
    fig.legend(ordered, [h.get_label() for h in ordered], loc="center right", title="layer")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attention_over_training(measure: str, label: str):
    """A figure of the student's per-layer `measure` (mean over heads) at each milestone."""

    def draw(rows: list[dict], path: Path) -> None:
        layers = in_order(r["layer"] for r in rows)
        epochs = in_order(r["epoch"] for r in rows)
        fig, ax = plt.subplots(figsize=(6.6, 3.6))
        styles = zip("osD^v<>", ["-", "--", "-.", ":"] * 2, strict=False)
        for layer, (marker, dash) in zip(layers, styles, strict=False):
            mine = sorted((r["epoch"], r[measure]) for r in rows if r["layer"] == layer)
            ax.plot(*zip(*mine, strict=True), marker=marker, linestyle=dash, label=layer)
        ax.set_xticks(epochs)
        ax.set_xlabel("student epoch (milestones)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), title="layer")
        ax.set_title(f"Student {label.split(' (')[0]} over training")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return draw


def attention_rollout_maps(rows: list[dict], path: Path) -> None:
    """rows: {role, sample, row, col, weight}: the class token's rolled-out attention on the patch
    grid, one column per sample, the teacher above the student; one colour scale per network."""
    roles = in_order(r["role"] for r in rows)
    samples = in_order(r["sample"] for r in rows)
    side = max(r["row"] for r in rows) + 1
    size = (2.3 * len(samples) + 1.2, 2.3 * len(roles) + 0.6)
    fig, axes = plt.subplots(len(roles), len(samples), squeeze=False, figsize=size,
                             layout="constrained")  # fmt: skip
    for i, role in enumerate(roles):
        mine = [r for r in rows if r["role"] == role]
        low, high = min(r["weight"] for r in mine), max(r["weight"] for r in mine)
        for j, sample in enumerate(samples):
            grid = [[0.0] * side for _ in range(side)]
            for r in mine:
                if r["sample"] == sample:
                    grid[r["row"]][r["col"]] = r["weight"]
            ax = axes[i][j]
            image = ax.imshow(grid, cmap="magma", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"test sample {sample}", fontsize=9)
            if j == 0:
                ax.set_ylabel(role)
        fig.colorbar(image, ax=list(axes[i]), label="rolled-out attention", shrink=0.9)
    fig.suptitle("Attention rollout: the class token's attention on the patches")
    fig.savefig(path, dpi=120)
    plt.close(fig)
