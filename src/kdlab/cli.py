"""The `kdlab` command: project-level tools around the DVC pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import KdlabError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and exit non-zero on any error")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    check.set_defaults(func=cmd_check)
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
