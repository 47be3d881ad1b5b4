"""Cross-experiment report: from `dvc exp show --json` to the tables and figures of a paper.

One row per experiment: its grid coordinates (data.name, teacher→student, kd.method, kd.alpha,
seed, and every other param that varies across the experiments: the grid's axes), the student's
and the teacher's test accuracy at the final epoch, and the analysis scalars (fidelity,
calibration, CKA, ...). KD-only params are blank for the pure baseline and a method's own params
for other methods, so a `kd.logit.temperature` axis groups only `logit` students.

For each KD configuration the table gives the paired effect of KD: per seed, the difference to
the pure baseline of the same seed and the same non-KD params (same teacher, initialisation and
data order), its mean and 95 % t-interval (kdlab.analysis.stats).

Experiments that failed or have no student metrics are listed, and so are the grid points that
have no experiment at all (expected seeds come from `grid.seeds` in params.yaml when present,
otherwise from the seeds seen anywhere for the same dataset). Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fnmatch
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from pandas.api.types import is_numeric_dtype

from kdlab.analysis.stats import CONFIDENCE, paired_delta
from kdlab.architectures import arch_label
from kdlab.config import NO_STUDENT
from kdlab.errors import ConfigError, KdlabError
from kdlab.flat import flatten
from kdlab.fsutil import atomic_directory

GRID_KEYS = ["dataset", "pair", "method", "alpha"]
ONE_MODEL = "one model"
"""The method column of a study of one model (`student.arch: none`): no student, no KD."""
PARAM = "params."
"""Prefix of the columns that hold an experiment's params (params.kd.logit.temperature, ...)."""
IDENTITY = ("name", "rev", "timestamp", "state", "dataset", "pair", "method", "alpha", "seed",
            "epochs")  # fmt: skip
"""A run's columns that are not measurements (every other non-param column is)."""
SHOWN = {"data.name", "teacher.arch", "student.arch", "kd.method", "kd.alpha", "seed"}
"""Params shown as GRID_KEYS (and seed) already."""
NOT_AXES = ("grid.", "slurm.", "device")
"""Params that never make two experiments different results."""
UNFINISHED = ("failed", "running", "queued")
"""States whose metrics are not (all) there: never summarised, always listed."""
SUMMARY_METRICS = ("fidelity/top1_agreement", "fidelity/kl_teacher_student",
                   "calibration/ece/student", "calibration/ece/teacher")  # fmt: skip
ALIGNMENT = {"cka/": ("mean CKA with the teacher", "heatmap"),
             "attn_match/": ("mean matched attention similarity (heads, 1 − JS / ln 2)",
                             "attn_heatmap")}  # fmt: skip
"""Per-layer teacher–student alignment scalars: summarised, swept over alpha and drawn as
configuration × alpha heatmaps (title, file prefix); attn_match only where both are ViTs."""


@dataclasses.dataclass
class Report:
    runs: pd.DataFrame  # every experiment with its state
    finished: pd.DataFrame
    summary: pd.DataFrame  # per configuration: accuracy, paired Δ, metrics (mean/std)
    problems: list[str]  # failed, incomplete and missing experiments, one line each
    axes: list[str] = dataclasses.field(default_factory=list)  # varying params' columns
    paired: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # KD runs with delta
    epochs: str = ""  # which epoch the accuracies are from, in words


def _param_values(params: dict, method: str | None) -> dict:
    """Every param as a column; KD params blank where they do not act (see the module doc)."""
    from kdlab.grid import value_text

    columns = {}
    for key, value in flatten(params).items():
        parts = key.split(".")
        kd_param = parts[0] == "kd" and key != "kd.method"
        if kd_param and (method == "none" or (len(parts) > 2 and parts[1] != method)):
            value = None
        if method == ONE_MODEL and (parts[0] == "kd" or (parts[0] == "student"
                                                           and key != "student.arch")):  # fmt: skip
            value = None  # no student: its params and the KD params act on nothing
        if isinstance(value, list):
            value = value_text(value)
        columns[PARAM + key] = value
    return columns


def _record(entry: dict, name: str | None, executor: dict | None) -> dict:
    data = entry.get("data") or {}
    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
    metrics = data.get("metrics") or {}
    student = metrics.get("metrics/student/metrics.json", {}).get("data", {})
    teacher = metrics.get("metrics/teacher/metrics.json", {}).get("data", {})
    analysis = metrics.get("metrics/analysis.json", {}).get("data", {})
    kd = params.get("kd", {})
    method = kd.get("method")
    state = (executor or {}).get("state") or ("failed" if entry.get("error") else "success")
    s_arch = params.get("student", {}).get("arch")
    t_label, s_label = (arch_label(params.get(r, {}).get("arch"), params.get(r, {}).get("size"))
                        for r in ("teacher", "student"))  # fmt: skip
    if (params.get("external") or {}).get("path"):  # kdlab.training.external: not trained here
        t_label = f"imported {t_label}"
    pair = f"{t_label}→{s_label}"
    role = "student"
    if s_arch == NO_STUDENT:  # a study of one model: its accuracy is the teacher stage's
        student, teacher, pair, method, role = (
            teacher,
            {},
            f"{t_label} (one model)",
            ONE_MODEL,
            "teacher",
        )
    step = student.get("step")
    imported = role == "teacher" and bool((params.get("external") or {}).get("path"))
    return {
        "name": name or entry.get("name") or str(entry.get("rev", ""))[:7],
        "rev": entry.get("rev"),
        "timestamp": data.get("timestamp"),
        "state": str(state).lower(),
        "dataset": params.get("data", {}).get("name"),
        "pair": pair,
        "method": method,
        "alpha": None if method in ("none", ONE_MODEL) else kd.get("alpha"),
        "seed": params.get("seed"),
        "acc": student.get("test", {}).get("acc"),
        "teacher_acc": teacher.get("test", {}).get("acc"),
        # an imported model has no epochs here: its one metrics step is its evaluation
        "epoch": None if step is None or imported else int(step) + 1,
        "epochs": None if imported else params.get(role, {}).get("epochs"),
        **{key: value for key, value in analysis.items() if isinstance(value, int | float)},
        **_param_values(params, method),
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
    return mark_corrupt(repo, parse_exp_show(json.loads(proc.stdout)))


METRICS_FILES = ("metrics/student/metrics.json", "metrics/teacher/metrics.json",
                 "metrics/analysis.json")  # fmt: skip


def mark_corrupt(repo: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose metrics files differ from their commit's dvc.lock: state `corrupt`, no
    numbers (a flipped byte would otherwise be a table entry)."""
    from kdlab.lockcheck import corrupt_files
    from kdlab.show import read_blobs

    revs = [rev for rev in runs.get("rev", pd.Series(dtype=str)).dropna().unique()
            if isinstance(rev, str) and len(rev) == 40]  # fmt: skip
    files = ("dvc.lock", *METRICS_FILES)
    blobs = read_blobs(repo, [f"{rev}:{f}" for rev in revs for f in files])
    measured = [c for c in runs.columns if c not in IDENTITY and not c.startswith(PARAM)]
    for rev in revs:
        found = {f: blobs[f"{rev}:{f}"] for f in METRICS_FILES}
        corrupt = corrupt_files(found, blobs[f"{rev}:dvc.lock"])
        if corrupt:
            at = runs["rev"] == rev
            runs.loc[at, "state"] = f"corrupt ({corrupt[0]} ≠ dvc.lock)"
            runs.loc[at, measured] = None
    return runs


def grid_seeds(params_path: Path) -> list[int] | None:
    from kdlab.schema import load_yaml

    if not params_path.exists():
        return None
    grid = (load_yaml(params_path.read_text()) or {}).get("grid") or {}
    seeds = grid.get("seeds")
    return list(seeds) if isinstance(seeds, list) else None


def varying_axes(finished: pd.DataFrame) -> list[str]:
    """Param columns that take more than one value across the finished experiments."""
    axes = []
    for column in finished.columns:
        if not column.startswith(PARAM):
            continue
        key = column[len(PARAM) :]
        if key in SHOWN or key.startswith(NOT_AXES):
            continue
        if finished[column].nunique(dropna=True) > 1:
            axes.append(column)
    return axes


def axis_names(axes: list[str]) -> dict[str, str]:
    """Short column titles for the axes (their last part, more where two collide)."""
    from kdlab.grid import axis_labels

    labels = axis_labels([a[len(PARAM) :] for a in axes])
    return {a: labels[a[len(PARAM) :]].replace("_", ".") for a in axes}


def find_problems(runs: pd.DataFrame, finished: pd.DataFrame, seeds: list[int] | None,
                  keys: list[str]) -> list[str]:  # fmt: skip
    problems = []
    for _, row in runs[~runs.index.isin(finished.index)].iterrows():
        if row["state"] == "failed":
            why = "failed"
        elif row["state"].startswith("corrupt"):
            why = f"{row['state']}: its numbers are left out"
        elif row["state"] in UNFINISHED:
            why = f"not finished (state {row['state']})"
        else:
            why = f"no student metrics (state {row['state']})"
        problems.append(f"{row['name']}: {why}")
    for _, row in finished.iterrows():
        if pd.notna(row["epochs"]) and row["epoch"] != row["epochs"]:
            problems.append(f"{row['name']}: metrics are from epoch {row['epoch']}, "
                            f"not the final epoch {row['epochs']}")  # fmt: skip
    names = axis_names([k for k in keys if k.startswith(PARAM)])
    for dataset, per_dataset in finished.groupby("dataset"):
        expected = set(seeds) if seeds else set(per_dataset["seed"])
        rest = keys[1:]
        for values, group in per_dataset.groupby(rest, dropna=False):
            where = [str(dataset)]
            for key, value in zip(rest, values, strict=True):
                if pd.isna(value):
                    continue
                if key == "alpha":
                    where.append(f"alpha={value:g}")
                elif key in names:
                    where.append(f"{names[key]}={value:g}" if isinstance(value, float)
                                 else f"{names[key]}={value}")  # fmt: skip
                else:
                    where.append(str(value))
            for seed in sorted(expected - set(group["seed"])):
                problems.append(f"{'/'.join(where)}: seed {seed} missing (no finished experiment)")
    return problems


def paired_runs(finished: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Every KD run with `delta`: its accuracy minus that of the baseline of the same seed and
    the same non-KD params (runs without such a baseline are left out)."""
    match = ["dataset", "pair", *[k for k in keys if k.startswith(PARAM)
                                  and not k.startswith(PARAM + "kd.")], "seed"]  # fmt: skip
    base = finished[finished["method"] == "none"][[*match, "acc"]]
    base = base.rename(columns={"acc": "baseline_acc"})
    kd = finished[finished["method"] != "none"]
    paired = kd.merge(base, on=match, how="inner")
    paired["delta"] = paired["acc"] - paired["baseline_acc"]
    return paired


def paired_table(paired: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per KD configuration: n, mean Δ, sd, 95 % interval and the mark."""
    rows = []
    for values, group in paired.groupby(keys, dropna=False):
        result = paired_delta(group["delta"].tolist())
        rows.append({**dict(zip(keys, values, strict=True)), "delta n": result.n,
                     "delta mean": result.mean, "delta sd": result.sd,
                     "delta ci low": result.low, "delta ci high": result.high,
                     "delta > 0 at 95%": result.positive})  # fmt: skip
    columns = [*keys, "delta n", "delta mean", "delta sd", "delta ci low", "delta ci high",
               "delta > 0 at 95%"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def summarize(finished: pd.DataFrame, paired: pd.DataFrame, keys: list[str],
              metrics: list[str]) -> pd.DataFrame:  # fmt: skip
    grouped = finished.groupby(keys, dropna=False)
    table = grouped.size().rename("n").to_frame()
    for metric in metrics:
        table[f"{metric} mean"] = grouped[metric].mean()
        table[f"{metric} std"] = grouped[metric].std(ddof=1)
    table = table.reset_index()
    if "teacher_acc mean" in table:
        table["gap mean"] = table["acc mean"] - table["teacher_acc mean"]
    deltas = paired_table(paired, keys)
    if deltas.empty:  # no KD run has its baseline (e.g. --only selected no baseline)
        return table.assign(**{c: math.nan for c in deltas.columns if c not in keys})
    # merge on keys with NaN (the baseline's alpha) equal to NaN
    return table.merge(deltas, on=keys, how="left")


def epochs_text(finished: pd.DataFrame) -> str:
    epochs = sorted({int(e) for e in finished["epoch"].dropna()})
    configured = sorted({int(e) for e in finished["epochs"].dropna()})
    if not epochs:
        return "the imported models' evaluation (not trained here)"
    if epochs == configured and len(epochs) == 1:
        return f"the final epoch (epoch {epochs[0]} of {epochs[0]})"
    return f"the last epoch each run recorded (epochs {', '.join(map(str, epochs))})"


def build_report(runs: pd.DataFrame, seeds: list[int] | None = None) -> Report:
    if runs.empty:
        raise KdlabError("no experiments found: run some with `dvc exp run` or `dvc queue start`")
    for column in ("teacher_acc", "epoch", "epochs"):
        if column not in runs:
            runs[column] = None
    # a running experiment may show the student's metrics before extract and analyze ran
    ok = ~runs["state"].isin(UNFINISHED) & runs["acc"].notna()
    finished = runs[ok].copy()
    axes = varying_axes(finished[finished["method"] != ONE_MODEL])
    keys = [*GRID_KEYS, *axes]
    metrics = ["acc", "teacher_acc", *[m for m in SUMMARY_METRICS if m in runs],
               *[c for prefix in ALIGNMENT
                 for c in sorted(c for c in runs.columns if c.startswith(prefix))]]  # fmt: skip
    paired = paired_runs(finished, keys)
    return Report(runs, finished, summarize(finished, paired, keys, metrics),
                  find_problems(runs, finished, seeds, keys), axes=axes,
                  paired=paired, epochs=epochs_text(finished))  # fmt: skip


def _panel_grid(n: int, width: float, height: float, per_row: int = 3, layout=None):
    """n panels in rows of `per_row`; unused panels are hidden. Returns (figure, flat axes)."""
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             layout=layout)  # fmt: skip
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _slug(text: str) -> str:
    """A pair label as a file name: `a{dim=96,heads=6}→b` -> `a-dim96-heads6-to-b`."""
    text = text.replace("→", "-to-").replace("/", "_").replace("{", "-").replace("}", "")
    return text.replace(",", "-").replace("=", "")


def _fmt(mean: float, std: float | None = None, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.4f}"


def _marked(value) -> bool:
    """The Δ > 0 mark of a summary row (blank, NaN, or a numpy/Python bool)."""
    return not pd.isna(value) and bool(value)


def config_label(row, axes: list[str], alpha: bool = True) -> str:
    """A configuration in words: `logit α=0.5 temperature=2`."""
    names = axis_names(axes)
    parts = [str(row["method"])]
    if alpha and not pd.isna(row["alpha"]):
        parts.append(f"α={row['alpha']:g}")
    parts += [f"{names[a]}={_value(row[a])}" for a in axes if not pd.isna(row[a])]
    return " ".join(parts)


def markdown_single(report: Report) -> list[str]:
    """Studies of one model: test accuracy over seeds with its t-interval, every seed's value,
    and the sequence attention scalars of the final model."""
    finished = report.finished[report.finished["method"] == ONE_MODEL]
    if finished.empty:
        return []
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = [f"Studies of one model (`student.arch: none`): test accuracy at {report.epochs}, mean "
             f"± sd over seeds, its {level} t-interval, and each seed's.", "",
             f"| dataset | model | seeds | test acc | {level} interval | per seed |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    groups = finished.groupby(["dataset", "pair"])
    for (dataset, pair), group in groups:
        group = group.sort_values("seed")
        result = paired_delta(group["acc"].tolist())
        interval = "–" if math.isnan(result.low) else f"[{result.low:.4f}, {result.high:.4f}]"
        seeds = ", ".join(f"{int(s)}: {a:.4f}" for s, a in zip(group["seed"], group["acc"],
                                                                strict=True))  # fmt: skip
        lines.append(f"| {dataset} | {pair} | {len(group)} | {_fmt(result.mean, result.sd)} | "
                     f"{interval} | {seeds} |")  # fmt: skip
    attention = sorted(c for c in finished.columns if c.startswith("seq_") and "/teacher/" in c)
    if attention:
        lines += ["", "Attention of the final model (kdlab.analysis.measures.sequence), mean ± sd "
                  "over seeds: normalised entropy (1 = uniform over the valid frames), mean "
                  "distance (frames), where the class query reads (normalised time), mass on the "
                  "first + last frame.", "",
                  "| dataset | model | measure | module | value |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for (dataset, pair), group in groups:
            for column in attention:
                measure, _, module = column.split("/", 2)
                values = group[column].dropna()
                if len(values):
                    lines.append(f"| {dataset} | {pair} | {measure} | {module} | "
                                 f"{_fmt(values.mean(), values.std(ddof=1), 3)} |")  # fmt: skip
    return lines


def markdown_summary(report: Report) -> str:
    """Two tables: accuracy with the paired effect of KD; fidelity, calibration and CKA; and
    the studies of one model (markdown_single)."""
    single = markdown_single(report)
    full = report
    report = dataclasses.replace(report, summary=report.summary[report.summary["method"]
                                                                != ONE_MODEL])  # fmt: skip
    if report.summary.empty:  # only studies of one model
        text = "\n".join(single) + "\n"
        return text + _problems_text(full)
    names = axis_names(report.axes)
    coords = ["dataset", "teacher→student", "method", "alpha", *names.values(), "seeds"]
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = [
        f"Test accuracy at {report.epochs}, mean ± sd over seeds. Δ: per seed, KD student − "
        f"pure baseline of the same seed (same teacher, initialisation and data order); mean "
        f"and {level} t-interval; ✓ where the whole interval is above 0. S − T: student − "
        f"teacher accuracy.",
        "",
        "| " + " | ".join([*coords, "student acc", "teacher acc", "S − T", "Δ vs baseline",
                          f"{level} interval of Δ", f"Δ > 0 at {level}"]) + " |",
        "|" + "---|" * (len(coords) + 6),
    ]  # fmt: skip
    for _, row in report.summary.iterrows():
        cells = [row["dataset"], row["pair"], row["method"], _value(row["alpha"]),
                 *[_value(row[a]) for a in report.axes], str(row["n"]),
                 _fmt(row["acc mean"], row["acc std"]),
                 _fmt(row["teacher_acc mean"], row["teacher_acc std"]),
                 _signed(row.get("gap mean", math.nan))]  # fmt: skip
        if row["method"] == "none":
            cells += ["(baseline)", "", ""]
        else:
            low, high = row["delta ci low"], row["delta ci high"]
            interval = "–" if pd.isna(low) else f"[{low:+.4f}, {high:+.4f}]"
            mark = "✓" if _marked(row["delta > 0 at 95%"]) else ""
            if pd.isna(row["delta n"]) or row["delta n"] == 0:
                cells += ["no baseline of the same seed", interval, mark]
            else:
                cells += [f"{_signed(row['delta mean'])} (n={int(row['delta n'])})", interval,
                          mark]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(report)]
    metrics = [m[: -len(" mean")] for m in report.summary.columns
               if m.endswith(" mean") and m[: -len(" mean")] not in ("acc", "teacher_acc",
                                                                      "gap", "delta")]  # fmt: skip
    if metrics:
        lines += ["", "Fidelity (top-1 agreement, mean KL(teacher ‖ student) in nats), expected "
                  "calibration error and CKA with the teacher on the test split, mean ± sd.", "",
                  "| " + " | ".join([*coords, *metrics]) + " |",
                  "|" + "---|" * (len(coords) + len(metrics))]  # fmt: skip
        for _, row in report.summary.iterrows():
            cells = [row["dataset"], row["pair"], row["method"], _value(row["alpha"]),
                     *[_value(row[a]) for a in report.axes], str(row["n"]),
                     *[_fmt(row[f"{m} mean"], row[f"{m} std"], 3) for m in metrics]]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    if single:
        lines += ["", *single]
    text = "\n".join(lines) + "\n"
    return text + _problems_text(report)


def _problems_text(report: Report) -> str:
    if not report.problems:
        return ""
    return "\n**Failed or missing experiments**\n\n" + "".join(f"- {p}\n" for p in report.problems)


def verdict(report: Report) -> str:
    """Which KD configurations beat the baseline at 95 %, and which did not, in words."""
    kd = report.summary[report.summary["method"] != "none"]
    passed = [config_label(r, report.axes) for _, r in kd.iterrows()
              if _marked(r["delta > 0 at 95%"])]  # fmt: skip
    failed = [config_label(r, report.axes) for _, r in kd.iterrows()
              if not _marked(r["delta > 0 at 95%"])]  # fmt: skip
    return (f"Δ > 0 at 95 % (the whole interval above 0): {', '.join(passed) or 'none'}. "
            f"Not shown to beat the baseline: {', '.join(failed) or 'none'}.")  # fmt: skip


def plot_paired(report: Report, out_dir: Path) -> list[Path]:
    """Δ vs the baseline per KD configuration: each seed a dot, the mean and its interval."""
    paths = []
    keys = [*GRID_KEYS, *report.axes]
    for (dataset, pair), rows in report.summary.groupby(["dataset", "pair"]):
        rows = rows[(rows["method"] != "none") & (rows["delta n"].fillna(0) > 0)]
        rows = rows.sort_values("delta mean")
        if rows.empty:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.6))
        for y, (_, row) in enumerate(rows.iterrows()):
            low, high, mean = row["delta ci low"], row["delta ci high"], row["delta mean"]
            color = "tab:green" if _marked(row["delta > 0 at 95%"]) else "tab:blue"
            if not pd.isna(low):
                ax.plot([low, high], [y, y], color=color, linewidth=2.5, solid_capstyle="butt")
            ax.plot([mean], [y], "D", color=color, markersize=7)
            runs = report.paired
            for key in keys:
                runs = runs[runs[key].isna()] if pd.isna(row[key]) else runs[runs[key] == row[key]]
            ax.plot(runs["delta"], [y + 0.18] * len(runs), "o", color="black", markersize=3.5,
                    alpha=0.6)  # fmt: skip
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(rows)), [config_label(r, report.axes) for _, r in rows.iterrows()])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("Δ test accuracy vs pure baseline (same seed)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{dataset}, {pair}: KD − baseline, mean (◆) and 95 % t-interval;\n"
                     "dots: single seeds; green: Δ > 0 at 95 %", fontsize=10)  # fmt: skip
        fig.tight_layout()
        path = out_dir / f"paired_delta_{dataset}_{_slug(pair)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def axis_label(metric: str) -> str:
    """What a swept metric's y axis measures: accuracy, or the alignment its prefix names."""
    if metric == "acc":
        return "accuracy"
    prefix = next((p for p in ALIGNMENT if metric.startswith(p)), None)
    return ALIGNMENT[prefix][0].removeprefix("mean ") if prefix else metric


def plot_alpha_sweeps(report: Report, metrics: list[str], out_dir: Path) -> list[Path]:
    """Metric vs alpha per configuration, where the grid swept more than one alpha."""
    paths = []
    for (dataset, pair), rows in report.summary.groupby(["dataset", "pair"]):
        if rows["alpha"].nunique(dropna=True) < 2:
            continue
        fig, axes = _panel_grid(len(metrics), width=4.6, height=3.6)
        for ax, metric in zip(axes, metrics, strict=False):
            for _, group in rows.groupby(["method", *report.axes], dropna=False):
                label = config_label(group.iloc[0], report.axes, alpha=False)
                if group["alpha"].isna().all():  # the pure baseline: one value, drawn as a band
                    mean, std = group[f"{metric} mean"].iloc[0], group[f"{metric} std"].iloc[0]
                    ax.axhline(mean, color="grey", linestyle="--", label=f"{label} (baseline)")
                    if not math.isnan(std):
                        ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
                    continue
                group = group.sort_values("alpha")
                mean, std = group[f"{metric} mean"], group[f"{metric} std"].fillna(0)
                line = ax.errorbar(group["alpha"], mean, yerr=std, marker="o", capsize=3,
                                   label=label)  # fmt: skip
                ax.fill_between(group["alpha"], mean - std, mean + std, alpha=0.2,
                                color=line[0].get_color())  # fmt: skip
            ax.set_xlabel("alpha")
            ax.set_title("student test accuracy" if metric == "acc" else metric)
            ax.set_ylabel(axis_label(metric), fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{dataset}, {pair}:\nalpha sweeps (mean ± 1σ over seeds)", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"alpha_sweep_{dataset}_{_slug(pair)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_heatmaps(
    report: Report, layers: list[str], out_dir: Path, title: str = ALIGNMENT["cka/"][0],
    prefix: str = "heatmap",
) -> list[Path]:  # fmt: skip
    """Per (dataset, pair), one panel per layer: `layers` (metrics in [0, 1]) by configuration
    and alpha."""
    paths = []
    kd_rows = report.summary[report.summary["alpha"].notna()]
    for (dataset, pair), rows in kd_rows.groupby(["dataset", "pair"]):
        rows = rows.assign(config=[config_label(r, report.axes, alpha=False)
                                   for _, r in rows.iterrows()])  # fmt: skip
        label_width = 0.075 * max(len(c) for c in rows["config"])  # inches of y tick labels
        fig, axes = _panel_grid(len(layers), width=3.0 + label_width,
                                height=1.2 + 0.3 * len(rows), layout="constrained")  # fmt: skip
        for ax, layer in zip(axes, layers, strict=False):
            table = rows.pivot_table(index="config", columns="alpha", values=f"{layer} mean")
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
        fig.colorbar(image, ax=axes, label=title.split(" (")[0])
        fig.suptitle(f"{dataset}, {pair}: {title}, configuration × alpha")
        path = out_dir / f"{prefix}_{dataset}_{_slug(pair)}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def plot_accuracy_vs_alignment(report: Report, alignment: str, out_dir: Path) -> Path:
    # a study of one model has no alignment with a teacher to plot
    report = dataclasses.replace(report, finished=report.finished[report.finished["method"]
                                                                  != ONE_MODEL])  # fmt: skip
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
    aligned = {prefix: [c[: -len(" mean")] for c in report.summary.columns
                        if c.startswith(prefix) and c.endswith(" mean")]
               for prefix in ALIGNMENT}  # fmt: skip
    layers = [layer for prefix_layers in aligned.values() for layer in prefix_layers]
    written = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "runs.csv"]
    written[0].write_text(markdown_summary(report))
    report.summary.to_csv(written[1], index=False)
    report.runs.to_csv(written[2], index=False)
    written += plot_paired(report, out_dir)
    written += plot_alpha_sweeps(report, ["acc", *layers], out_dir)
    for prefix, (title, file_prefix) in ALIGNMENT.items():
        if aligned[prefix]:
            written += plot_heatmaps(report, aligned[prefix], out_dir, title, file_prefix)
    paired_runs = report.finished[report.finished["method"] != ONE_MODEL]
    if alignment in paired_runs.columns and paired_runs[alignment].notna().any():
        written.append(plot_accuracy_vs_alignment(report, alignment, out_dir))
    if since is not None:
        written.append(out_dir / "since.md")
        written[-1].write_text(since_report(report, since))
    return written


def write_provenance(repo: Path, out_dir: Path, report: Report, command: str) -> list[Path]:
    """Where the numbers come from: the commit the experiments ran on and its params.yaml,
    how many ran and finished, when the first and the last finished, and the command."""
    from kdlab.gitutil import git_output

    commit = git_output(repo, "rev-parse", "HEAD").strip()
    params = git_output(repo, "show", f"{commit}:params.yaml")
    stamps = pd.to_datetime(report.finished["timestamp"], errors="coerce").dropna()
    provenance = {
        "commit": commit,
        "command": command,
        "generated": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "experiments": len(report.runs),
        "finished": len(report.finished),
        "problems": len(report.problems),
        "first_finished": stamps.min().isoformat() if len(stamps) else None,
        "last_finished": stamps.max().isoformat() if len(stamps) else None,
    }
    paths = [out_dir / "provenance.json", out_dir / "params.yaml"]
    paths[0].write_text(json.dumps(provenance, indent=2) + "\n")
    paths[1].write_text(params if params.endswith("\n") else params + "\n")
    return paths


REPORT_FILES = ("summary.md", "summary.csv", "runs.csv", "since.md", "provenance.json",
                "params.yaml", "paired_delta_*.png", "alpha_sweep_*.png", "heatmap_*.png",
                "attn_heatmap_*.png", "acc_vs_alignment.png")  # fmt: skip
"""Every file a report writes (patterns): what an earlier report left, which the next replaces."""


@contextlib.contextmanager
def report_directory(out_dir: Path) -> Iterator[Path]:
    """A temporary directory beside `out_dir` to write the report into; it replaces `out_dir`
    when the report is complete, so no file of an earlier report survives (another grid,
    another --alignment) and a failed report leaves the last one as it was. Files a report does
    not write (notes beside a committed report) are carried over."""
    with atomic_directory(out_dir) as tmp:
        for path in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
            if not any(fnmatch.fnmatchcase(path.name, name) for name in REPORT_FILES):
                copy = shutil.copytree if path.is_dir() else shutil.copy2
                copy(path, tmp / path.name)
        yield tmp


def select(runs: pd.DataFrame, pattern: str | None) -> pd.DataFrame:
    if not pattern:
        return runs
    names = runs["name"] if "name" in runs else pd.Series(dtype=str)  # no experiments at all
    chosen = runs[names.map(lambda n: fnmatch.fnmatchcase(str(n), pattern))]
    if chosen.empty:
        raise ConfigError(f"--only {pattern!r} matches no experiment")
    return chosen


def select_dataset(runs: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """`--dataset`: the experiments on one dataset (`data.name`); one line naming the datasets
    there are when none is on it."""
    if not dataset:
        return runs
    present = sorted({str(d) for d in runs["dataset"].dropna()}) if "dataset" in runs else []
    chosen = runs[runs["dataset"] == dataset] if "dataset" in runs else runs.iloc[0:0]
    if chosen.empty:
        raise ConfigError(f"--dataset {dataset!r} matches no experiment; the experiments are on "
                          f"{', '.join(present) or 'no dataset'}")  # fmt: skip
    return chosen


def check_alignment(report: Report, alignment: str) -> None:
    """--alignment must name an analysis scalar the finished experiments have (the KD ones:
    a study of one model has no teacher to be aligned with, and only studies of one model
    need none)."""
    if (report.finished["method"] == ONE_MODEL).all():
        return
    choices = sorted(
        c
        for c in report.finished.columns
        if "/" in c and not c.startswith("params.") and is_numeric_dtype(report.finished[c])
    )
    if alignment not in choices:
        shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
        raise ConfigError(f"--alignment must be an analysis metric of the finished experiments "
                          f"({shown}); got {alignment!r}")  # fmt: skip
