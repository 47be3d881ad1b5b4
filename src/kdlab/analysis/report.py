"""Cross-experiment report: from `dvc exp show --json` to the tables and figures of a paper.

One row per experiment: its grid coordinates (data.name, kd.method, kd.alpha, seed), the
student's test accuracy and the analysis scalars. Experiments that failed or have no student
metrics are listed, and so are the grid points that have no experiment at all (expected seeds
come from `grid.seeds` in params.yaml when present, otherwise from the seeds seen anywhere for
the same dataset). Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from kdlab.errors import KdlabError

GRID_KEYS = ["dataset", "pair", "method", "alpha"]


@dataclasses.dataclass
class Report:
    runs: pd.DataFrame  # every experiment with its state
    finished: pd.DataFrame
    summary: pd.DataFrame  # mean/std per (dataset, method, alpha)
    problems: list[str]  # failed, incomplete and missing experiments, one line each


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _record(entry: dict, name: str | None, executor: dict | None) -> dict:
    data = entry.get("data") or {}
    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
    metrics = data.get("metrics") or {}
    student = metrics.get("metrics/student/metrics.json", {}).get("data", {})
    analysis = metrics.get("metrics/analysis.json", {}).get("data", {})
    kd = params.get("kd", {})
    method = kd.get("method")
    state = (executor or {}).get("state") or ("failed" if entry.get("error") else "success")
    return {
        "name": name or entry.get("name") or str(entry.get("rev", ""))[:7],
        "rev": entry.get("rev"),
        "timestamp": data.get("timestamp"),
        "state": str(state).lower(),
        "dataset": params.get("data", {}).get("name"),
        "pair": f"{params.get('teacher', {}).get('arch')}→{params.get('student', {}).get('arch')}",
        "method": method,
        "alpha": None if method == "none" else kd.get("alpha"),
        "seed": params.get("seed"),
        "acc": student.get("test", {}).get("acc"),
        **{key: value for key, value in analysis.items() if isinstance(value, int | float)},
    }


def parse_exp_show(entries: list[dict]) -> pd.DataFrame:
    """Rows for every student experiment (not the workspace, the baseline commits themselves,
    or the grid's teacher experiments, which stop before the student)."""
    from kdlab.grid import is_teacher_experiment

    rows = []
    for commit in entries:
        for exp in commit.get("experiments") or []:
            if is_teacher_experiment(exp.get("name")):
                continue
            for rev in exp.get("revs") or []:
                rows.append(_record(rev, exp.get("name"), exp.get("executor")))
    return pd.DataFrame(rows)


def load_experiments(repo: Path) -> pd.DataFrame:
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "exp", "show", "--json", "-A"], cwd=repo,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        last_line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KdlabError(f"dvc exp show failed in {repo}: {last_line}")
    return parse_exp_show(json.loads(proc.stdout))


def grid_seeds(params_path: Path) -> list[int] | None:
    from kdlab.config import load_yaml

    if not params_path.exists():
        return None
    grid = (load_yaml(params_path.read_text()) or {}).get("grid") or {}
    seeds = grid.get("seeds")
    return list(seeds) if isinstance(seeds, list) else None


def find_problems(runs: pd.DataFrame, finished: pd.DataFrame, seeds: list[int] | None) -> list[str]:
    problems = []
    for _, row in runs[~runs.index.isin(finished.index)].iterrows():
        why = "failed" if row["state"] == "failed" else f"no student metrics (state {row['state']})"
        problems.append(f"{row['name']}: {why}")
    for dataset, per_dataset in finished.groupby("dataset"):
        expected = set(seeds) if seeds else set(per_dataset["seed"])
        keys = ["pair", "method", "alpha"]
        for (pair, method, alpha), group in per_dataset.groupby(keys, dropna=False):
            for seed in sorted(expected - set(group["seed"])):
                where = f"{dataset}/{pair}/{method}" + (
                    "" if pd.isna(alpha) else f"/alpha={alpha:g}"
                )
                problems.append(f"{where}: seed {seed} missing (no finished experiment)")
    return problems


def summarize(finished: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    grouped = finished.groupby(GRID_KEYS, dropna=False)
    table = grouped.size().rename("n").to_frame()
    for metric in metrics:
        table[f"{metric} mean"] = grouped[metric].mean()
        table[f"{metric} std"] = grouped[metric].std(ddof=1)
    return table.reset_index()


def build_report(runs: pd.DataFrame, seeds: list[int] | None = None) -> Report:
    if runs.empty:
        raise KdlabError("no experiments found: run some with `dvc exp run` or `dvc queue start`")
    ok = (runs["state"] != "failed") & runs["acc"].notna()
    finished = runs[ok].copy()
    metrics = ["acc", *sorted(c for c in runs.columns if c.startswith("cka/"))]
    return Report(
        runs, finished, summarize(finished, metrics), find_problems(runs, finished, seeds)
    )


def _panel_grid(n: int, width: float, height: float, per_row: int = 3):
    """n panels in rows of `per_row`; unused panels are hidden. Returns (figure, flat axes)."""
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _slug(text: str) -> str:
    return text.replace("→", "-to-").replace("/", "_")


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def markdown_summary(report: Report) -> str:
    metrics = [c[: -len(" mean")] for c in report.summary.columns if c.endswith(" mean")]
    lines = ["| dataset | teacher→student | method | alpha | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|---|---|" + "---|" * len(metrics)]  # fmt: skip
    for _, row in report.summary.iterrows():
        alpha = "–" if pd.isna(row["alpha"]) else f"{row['alpha']:g}"
        cells = [_fmt(row[f"{m} mean"], row[f"{m} std"]) for m in metrics]
        coords = f"| {row['dataset']} | {row['pair']} | {row['method']} | {alpha} | {row['n']} | "
        lines.append(coords + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if report.problems:
        text += "\n**Failed or missing experiments**\n\n" + "".join(
            f"- {p}\n" for p in report.problems
        )
    return text


def plot_alpha_sweeps(report: Report, metrics: list[str], out_dir: Path) -> list[Path]:
    paths = []
    for (dataset, pair), rows in report.summary.groupby(["dataset", "pair"]):
        fig, axes = _panel_grid(len(metrics), width=4.6, height=3.6)
        for ax, metric in zip(axes, metrics, strict=False):
            for method, group in rows.groupby("method"):
                if group["alpha"].isna().all():  # the pure baseline: one value, drawn as a band
                    mean, std = group[f"{metric} mean"].iloc[0], group[f"{metric} std"].iloc[0]
                    ax.axhline(mean, color="grey", linestyle="--", label=f"{method} (baseline)")
                    if not math.isnan(std):
                        ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
                    continue
                group = group.sort_values("alpha")
                mean, std = group[f"{metric} mean"], group[f"{metric} std"].fillna(0)
                line = ax.errorbar(group["alpha"], mean, yerr=std, marker="o", capsize=3,
                                   label=method)  # fmt: skip
                ax.fill_between(group["alpha"], mean - std, mean + std, alpha=0.2,
                                color=line[0].get_color())  # fmt: skip
            ax.set_xlabel("alpha")
            ax.set_title(metric)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{dataset}, {pair}: alpha sweeps (mean ± 1σ over seeds)")
        fig.tight_layout()
        path = out_dir / f"alpha_sweep_{dataset}_{_slug(pair)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_heatmaps(report: Report, layers: list[str], out_dir: Path) -> list[Path]:
    paths = []
    kd_rows = report.summary[report.summary["alpha"].notna()]
    for (dataset, pair), rows in kd_rows.groupby(["dataset", "pair"]):
        fig, axes = _panel_grid(len(layers), width=4.2, height=3.4)
        for ax, layer in zip(axes, layers, strict=False):
            table = rows.pivot_table(index="method", columns="alpha", values=f"{layer} mean")
            image = ax.imshow(table.values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(table.columns)), [f"{a:g}" for a in table.columns])
            ax.set_yticks(range(len(table.index)), table.index)
            for i in range(table.shape[0]):
                for j in range(table.shape[1]):
                    value = table.values[i, j]
                    if not math.isnan(value):
                        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                                color="white" if value < 0.6 else "black")  # fmt: skip
            ax.set_xlabel("alpha")
            ax.set_title(layer)
        fig.colorbar(image, ax=axes, label="mean CKA")
        fig.suptitle(f"{dataset}, {pair}: method × alpha", y=1.04)
        path = out_dir / f"heatmap_{dataset}_{_slug(pair)}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def plot_accuracy_vs_alignment(report: Report, alignment: str, out_dir: Path) -> Path:
    datasets = sorted(report.finished["dataset"].dropna().unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = report.finished[report.finished["dataset"] == dataset]
        for method, group in rows.groupby("method"):
            ax.scatter(group[alignment], group["acc"], label=method, s=28)
        ax.set_xlabel(alignment)
        ax.set_ylabel("student test accuracy")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy vs alignment (one point per experiment)")
    fig.tight_layout()
    path = out_dir / "acc_vs_alignment.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def since_report(report: Report, since: dt.datetime) -> str:
    stamps = pd.to_datetime(report.finished["timestamp"], errors="coerce")
    recent = report.finished[stamps >= since]
    lines = [f"# Finished since {since.isoformat()}: {len(recent)} experiment(s)", ""]
    for _, r in recent.iterrows():
        alpha = "–" if pd.isna(r["alpha"]) else f"{r['alpha']:g}"
        lines.append(f"- {r['name']} ({r['dataset']}, {r['pair']}, {r['method']}, alpha={alpha}, "
                     f"seed={r['seed']}): acc {r['acc']:.4f}")  # fmt: skip
    if len(recent):
        lines += ["", "## Best per method (test accuracy)", ""]
        best = recent.loc[recent.groupby("method")["acc"].idxmax()]
        lines += [f"- {r['method']}: {r['name']} acc {r['acc']:.4f}" for _, r in best.iterrows()]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out_dir: Path, alignment: str,
                 since: dt.datetime | None = None) -> list[Path]:  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = [c[: -len(" mean")] for c in report.summary.columns
              if c.startswith("cka/") and c.endswith(" mean")]  # fmt: skip
    written = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "runs.csv"]
    written[0].write_text(markdown_summary(report))
    report.summary.to_csv(written[1], index=False)
    report.runs.to_csv(written[2], index=False)
    written += plot_alpha_sweeps(report, ["acc", *layers], out_dir)
    if layers:
        written += plot_heatmaps(report, layers, out_dir)
    if alignment in report.finished.columns:
        written.append(plot_accuracy_vs_alignment(report, alignment, out_dir))
    if since is not None:
        written.append(out_dir / "since.md")
        written[-1].write_text(since_report(report, since))
    return written


def select(runs: pd.DataFrame, pattern: str | None) -> pd.DataFrame:
    if not pattern:
        return runs
    return runs[runs["name"].map(lambda n: fnmatch.fnmatch(str(n), pattern))]
