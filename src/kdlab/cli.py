"""The `kdlab` command: project-level tools around the DVC pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import ConfigError, KdlabError


def cmd_check(args: argparse.Namespace) -> None:
    """Validate params.yaml (every section, type and range) without doing any work."""
    from kdlab.distill import load_checked_params

    params = load_checked_params(args.params)
    kd = params.kd
    kd_text = "pure baseline" if kd.method == "none" else f"{kd.method}, alpha={kd.alpha:g}"
    print(
        f"{args.params} OK: seed {params.seed}, dataset {params.data.name}, "
        f"teacher {params.teacher.arch} ({params.teacher.epochs} epochs), "
        f"student {params.student.arch} ({params.student.epochs} epochs), kd {kd_text}"
    )


def cmd_kd_scale(args: argparse.Namespace) -> None:
    """Print alpha·w·L / ((1 − alpha)·CE) at initialisation for every method, dataset and pair."""
    import json

    from kdlab.data.datasets import DATASETS
    from kdlab.kd_scale import DEFAULT_PAIRS, markdown_table, measure_all

    datasets = args.datasets or list(DATASETS)
    for name in datasets:
        if name not in DATASETS:
            raise ConfigError(f"--datasets must be among {', '.join(DATASETS)}, got {name!r}")
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else list(DEFAULT_PAIRS)
    rows = measure_all(datasets, pairs, batch=args.batch)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        print(markdown_table(rows))


def cmd_report(args: argparse.Namespace) -> None:
    """Tables and figures across finished experiments (`dvc exp show`), into plots/report/."""
    import datetime as dt

    from kdlab.analysis import report as rep

    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since must be a date like 2026-11-21 or 2026-11-21T14:00, "
                              f"got {args.since!r}") from None  # fmt: skip
    runs = rep.select(rep.load_experiments(args.repo), args.only)
    report = rep.build_report(runs, rep.grid_seeds(args.repo / "params.yaml"))
    written = rep.write_report(report, args.repo / args.out, args.alignment, since)
    print(rep.markdown_summary(report), end="")
    if since is not None:
        print(rep.since_report(report, since), end="")
    print(f"wrote {len(written)} files to {args.repo / args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and exit non-zero on any error")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    check.set_defaults(func=cmd_check)
    scale = sub.add_parser("kd-scale", help="KD term vs cross-entropy at initialisation")
    scale.add_argument("--datasets", nargs="*", help="default: every registered dataset")
    scale.add_argument("--pairs", nargs="*", help="teacher:student, e.g. resnet56:resnet20")
    scale.add_argument("--batch", type=int, default=64)
    scale.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    scale.set_defaults(func=cmd_kd_scale)
    report = sub.add_parser("report", help="tables and figures across finished experiments")
    report.add_argument("--repo", type=Path, default=Path("."))
    report.add_argument("--out", type=Path, default=Path("plots/report"))
    report.add_argument("--since", help="also list experiments finished since this date")
    report.add_argument("--only", help="experiment names matching this glob, e.g. 'cifar100-*'")
    report.add_argument("--alignment", default="cka/embedding",
                        help="analysis metric on the x axis of the accuracy scatter")  # fmt: skip
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KdlabError as exc:
        print(f"kdlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
