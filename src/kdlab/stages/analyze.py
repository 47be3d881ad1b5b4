"""DVC stage `analyze`: CKA, dimensionality, separability, ICA and SAEs from the cached
activations, to metrics/analysis.json and plots/."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kdlab.stages._common import StageRun, run_stage
from kdlab.training.seeding import start_run

log = logging.getLogger("kdlab.analyze")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--activations", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model.pt")
    parser.add_argument("--student", type=Path, required=True, help="student model.pt")
    parser.add_argument("--metrics", type=Path, required=True, help="analysis.json to write")
    parser.add_argument("--figures", type=Path, required=True, help="directory for PNGs")
    parser.add_argument("--plot-data", type=Path, required=True, help="directory for plot JSON")


def body(run: StageRun) -> None:
    from kdlab.analysis.measures import analyze_cache, write_figures, write_plot_data
    from kdlab.extract.activations import ActivationCache
    from kdlab.fsutil import atomic_directory, write_bytes_atomic

    args, params, device = run.args, run.params, run.device
    cache = ActivationCache(args.activations)
    models = {"teacher": args.teacher}
    if not params.one_model:  # a study of one model: the teacher stage's alone
        models["student"] = args.student
    cache.check_fresh(models)
    result = analyze_cache(cache, params.analyze, params.seed, device)
    # Each output whole or not at all (a stale figure of an earlier run never survives), and
    # the metrics, which `dvc exp show` reads, last.
    with atomic_directory(args.plot_data) as tmp:
        write_plot_data(result, tmp)
    with atomic_directory(args.figures) as tmp:
        figures = write_figures(result, tmp)
    text = json.dumps(result.metrics, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(args.metrics, text.encode())
    log.info(
        "wrote %d metrics to %s and %d figures", len(result.metrics), args.metrics, len(figures)
    )


def main(argv=None) -> int:
    return run_stage("analyze", add_args, body, argv, start=start_run)


if __name__ == "__main__":
    sys.exit(main())
