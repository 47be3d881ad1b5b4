"""The `kdlab` command: project-level tools around the DVC pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from kdlab.errors import ConfigError, KdlabError


def cmd_check(args: argparse.Namespace) -> None:
    """Validate params.yaml (every section, type and range) without doing any work."""
    from kdlab.config import read_params_file
    from kdlab.preflight import preflight
    from kdlab.validate import check_raw

    raw = read_params_file(args.params)
    params = check_raw(raw)
    pipeline = Path(args.params).resolve().parent / "dvc.yaml"
    if pipeline.is_file():  # the same preflight as the check stage: present, writable, room
        preflight(raw, params, pipeline.parent, pipeline)
    from kdlab.doctor import sweep_workspace
    from kdlab.remotes import verify_warnings

    removed, _ = sweep_workspace(pipeline.parent)  # a killed writer's temps (kdlab.fsutil)
    for path in removed:
        print(f"kdlab check: removed {path.relative_to(pipeline.parent)} (its writer is gone)")
    for warning in verify_warnings(pipeline.parent):
        print(f"kdlab check: warning: {warning}", file=sys.stderr)
    kd = params.kd
    kd_text = "pure baseline" if kd.method == "none" else f"{kd.method}, alpha={kd.alpha:g}"
    print(
        f"{args.params} OK: seed {params.seed}, dataset {params.data.name}, "
        f"teacher {params.teacher.arch} ({params.teacher.epochs} epochs), "
        f"student {params.student.arch} ({params.student.epochs} epochs), kd {kd_text}"
    )


def cmd_deps(args: argparse.Namespace) -> None:
    """Print each dvc.yaml stage's src/ deps as they must be: its module's import closure."""
    from kdlab.codedeps import compact_deps, stage_modules

    for stage, module in stage_modules(args.dvc_yaml).items():
        print(f"{stage}:  # {module}")
        for dep in compact_deps(module):
            print(f"  - {dep}")


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
    runs = rep.select_dataset(rep.select(rep.load_experiments(args.repo), args.only), args.dataset)
    report = rep.build_report(runs, rep.grid_seeds(args.repo / "params.yaml"))
    rep.check_alignment(report, args.alignment)  # before anything is written
    command = shlex.join(["kdlab", *args.argv])
    with rep.report_directory(args.repo / args.out) as stage:  # replaces the last report whole
        written = rep.write_report(report, stage, args.alignment, since)
        written += rep.write_provenance(args.repo, stage, report, command)
    print(rep.markdown_summary(report), end="")
    if since is not None:
        print(rep.since_report(report, since), end="")
    print(f"wrote {len(written)} files to {args.repo / args.out}")


def cmd_show(args: argparse.Namespace) -> None:
    """Every experiment of the grid, one row each: state, accuracies, delta to its baseline."""
    import shutil

    from kdlab import show

    rows = show.collect(args.repo, args.repo / args.params, all_commits=args.all_commits)
    rows = show.sort_rows(show.select(rows, args.only), args.sort, args.desc)
    if args.only and not rows:
        raise ConfigError(f"--only {args.only!r} matches no experiment")
    if args.md:
        print(show.markdown(rows), end="")
    elif args.csv:
        print(show.as_csv(rows), end="")
    elif args.json:
        print(show.as_json(rows), end="")
    else:
        width = args.width or shutil.get_terminal_size((160, 24)).columns
        print(show.table(rows, width), end="")


def cmd_preset(args: argparse.Namespace) -> None:
    """Write a preset's params into params.yaml (validated first; comments kept)."""
    from kdlab.preset import apply_preset
    from kdlab.workspace import held

    with held(Path(args.params).resolve().parent, "run", "kdlab preset"):  # kdlab.workspace
        changed = apply_preset(args.preset, args.params)
    print(f"{args.params}: {len(changed)} params set from {args.preset}"
          + "".join(f"\n  {key}" for key in changed))  # fmt: skip


def cmd_grid_queue(args: argparse.Namespace) -> None:
    """Queue the grid of params.yaml as DVC experiments (teachers, baselines, KD students)."""
    from kdlab import grid

    plan = grid.load_grid_plan(args.params)
    from kdlab.workspace import held

    with held(Path(".").resolve(), "queue", "kdlab grid queue"):  # stashes the workspace
        actions = grid.queue_grid(Path("."), plan, dry_run=args.dry_run)
    print(grid.format_plan(actions), end="")
    new = sum(1 for _, what in actions if "queue" in what and "already" not in what)
    verb = "would queue" if args.dry_run else "queued"
    print(f"{len(plan)} experiments in the grid: {verb} {new}, "
          f"skipped {len(plan) - new} (queued, running or finished)")  # fmt: skip
    if new and not args.dry_run:
        print("run them with: dvc queue start -j N   (each teacher is trained once)")


def cmd_grid_requeue(args: argparse.Namespace) -> None:
    """Queue again the experiments whose queue worker vanished (kdlab.requeue)."""
    from kdlab.requeue import requeue_dead

    done = requeue_dead(Path("."), dry_run=args.dry_run)
    for name, what in done:
        print(f"{name}: {what}")
    start = "; run them with: dvc queue start -j N" if done and not args.dry_run else ""
    print(f"{len(done)} experiments whose worker vanished{start}")


def cmd_doctor(args: argparse.Namespace) -> None:
    """What kills leave around the outputs, found and (where safe) removed (kdlab.doctor)."""
    from kdlab.doctor import doctor

    for line in doctor(Path("."), clean_remote=args.clean_remote):
        print(line)


def cmd_bench(args: argparse.Namespace) -> None:
    """Measure training throughput (and with --suite dvc/all, the DVC operations of a grid)."""
    import datetime as dt
    import json

    from tqdm import tqdm

    from kdlab.gitutil import git_output
    from kdlab.stages._common import setup_logging

    setup_logging()
    try:
        commit = git_output(Path("."), "rev-parse", "HEAD")
    except KdlabError:
        commit = None  # not run inside a git checkout
    results: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": commit}
    tables: list[str] = []
    if args.suite in ("train", "all"):
        import torch

        from kdlab.bench import train as bench
        from kdlab.training.seeding import configure_torch, resolve_device

        device = resolve_device(args.device)
        cfg = bench.resolve_config(args.config, device, args.steps, args.warmup)
        opts = bench.resolve_options(device, args.reference_workers, args.kdlab_compile,
                                     args.bound_compile)  # fmt: skip
        configure_torch(device)
        torch.manual_seed(0)
        progress = lambda it: tqdm(it, desc="bench", unit="method", file=sys.stderr)  # noqa: E731
        methods = args.methods or bench.default_methods(cfg)
        results["train"] = bench.run_benchmark(cfg, methods, opts, progress)
        tables.append(bench.format_table(results["train"]))
    if args.suite in ("real", "all"):
        from kdlab.bench import realdata
        from kdlab.training.seeding import configure_torch, resolve_device

        device = resolve_device(args.device)
        configure_torch(device)
        real = realdata.RealConfig(arch=args.arch, train_subset=args.train_subset,
                                   target_acc=args.target_acc,
                                   max_epochs=args.max_epochs)  # fmt: skip
        results["real"] = realdata.run_real_benchmark(real, device, args.download_dir)
        tables.append(realdata.format_real_table(results["real"]))
    if args.suite in ("dvc", "all"):
        from kdlab.bench import dvc as bench_dvc

        results["dvc"] = bench_dvc.run_benchmark(Path("."), args.experiments)
        tables.append(bench_dvc.format_table(results["dvc"]))
    print("\n".join(tables))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    markdown = args.json.with_suffix(".md")
    markdown.write_text("\n".join(tables))
    print(f"wrote {args.json} and {markdown}")


def _add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="training throughput vs a reference loop and a bound")
    bench.add_argument(
        "--suite",
        choices=("train", "real", "dvc", "all"),
        default="train",
        help="train: images/s per KD method; real: time to a Fashion-MNIST test accuracy, "
        "kdlab vs the reference loop; dvc: repro, queue, exp show",
    )
    bench.add_argument("--target-acc", type=float, default=0.85, help="real suite: the target")
    bench.add_argument("--max-epochs", type=int, default=10, help="real suite: give up after")
    bench.add_argument("--train-subset", type=int, default=10_000,
                       help="real suite: training images (stratified; 0 = all 60,000)")  # fmt: skip
    bench.add_argument("--arch", default="resnet8", help="real suite: the network")
    bench.add_argument("--download-dir", type=Path,
                       help="real suite: the official files (if not installed)")  # fmt: skip
    bench.add_argument(
        "--config",
        default="auto",
        help="cifar (resnet110->resnet56, 50k 3x32x32, 100 classes) or small "
        "(resnet20->resnet8); auto = cifar on CUDA, small on CPU",
    )
    bench.add_argument("--methods", nargs="*", help="KD methods (default: all, none = pure)")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    bench.add_argument("--steps", type=int, help="timed steps per measurement")
    bench.add_argument("--warmup", type=int, help="untimed steps before each measurement")
    bench.add_argument(
        "--reference-workers",
        type=int,
        help="DataLoader workers of the reference (default: 4 on CUDA, 0 on CPU)",
    )
    bench.add_argument("--kdlab-compile", default="auto", help="auto (CUDA only) | on | off")
    bench.add_argument("--bound-compile", default="auto", help="auto (CUDA only) | on | off")
    bench.add_argument(
        "--experiments", type=int, default=300, help="dvc suite: experiments listed by dvc exp show"
    )
    bench.add_argument("--json", type=Path, default=Path("bench.json"), help="results file")
    bench.set_defaults(func=cmd_bench)


def _slurm_setup(args: argparse.Namespace):
    from kdlab import grid
    from kdlab.slurm import submit
    from kdlab.slurm.config import load_slurm_config
    from kdlab.validate import check_file

    params = check_file(args.params, grid_points=not getattr(args, "queued", False))
    overrides = {k: getattr(args, k, None) for k in
                 ("partition", "account", "gpus", "cpus", "mem", "time")}  # fmt: skip
    config = load_slurm_config(params.extra.get("slurm"), overrides)
    if getattr(args, "queued", False):
        from kdlab.slurm.queued import queued_experiments

        planned = queued_experiments(Path("."))
        if not planned:
            raise KdlabError("the DVC queue holds no queued experiment on this commit")
        from kdlab.config import read_params_file
        from kdlab.validate import check_grid_points

        check_grid_points(read_params_file(args.params), planned)
    else:
        planned = grid.load_grid_plan(args.params)
    experiments = submit.select(planned, args.only)
    ctx = submit.make_context(Path("."), config, allow_dirty=getattr(args, "allow_dirty", False))
    return ctx, experiments


def cmd_slurm_submit(args: argparse.Namespace) -> None:
    """Submit the grid's new and dead experiments to SLURM, one job each, teachers first."""
    from kdlab.slurm import submit

    ctx, experiments = _slurm_setup(args)
    actions, scripts = submit.submit(ctx, experiments, dry_run=args.dry_run)
    if args.queued and not args.dry_run:
        from kdlab.slurm.queued import forget_queued

        # SLURM has them now (or they were finished/live already): never run them locally too
        forget_queued(Path("."), [a.exp.name for a in actions])
    for name, script in scripts.items() if args.dry_run else ():
        print(f"# ---- {name} ----\n{script}")
    print(submit.format_actions(actions), end="")
    skipped = sum(1 for a in actions if a.what.startswith("skipped"))
    verb = "would submit" if args.dry_run else "submitted"
    print(f"{len(actions)} experiments: {verb} {len(actions) - skipped}, "
          f"{skipped} finished or still live")  # fmt: skip


def cmd_slurm_status(args: argparse.Namespace) -> None:
    """Each grid experiment's state: finished, a live SLURM state, dead, or new."""
    from kdlab.slurm import submit

    ctx, experiments = _slurm_setup(args)
    print(submit.status_table(ctx, experiments), end="")


def _add_slurm_parsers(sub) -> None:
    slurm = sub.add_parser("slurm", help="run the grid on a SLURM cluster").add_subparsers(
        dest="slurm_command", required=True
    )
    submit = slurm.add_parser("submit", help="one job per experiment; skips live and finished")
    status = slurm.add_parser("status", help="each experiment's state")
    for p in (submit, status):
        p.add_argument("--params", type=Path, default=Path("params.yaml"))
        p.add_argument("--only", help="experiments matching this glob (and their teachers)")
    submit.add_argument("--dry-run", action="store_true", help="print the sbatch scripts only")
    submit.add_argument("--queued", action="store_true",
                        help="submit the experiments queued with dvc exp run --queue, not the "
                             "grid; they leave the local queue")  # fmt: skip
    submit.add_argument("--allow-dirty", action="store_true",
                        help="submit although tracked files have uncommitted changes")  # fmt: skip
    for name, kind, text in (
        ("partition", str, "sbatch --partition"), ("account", str, "sbatch --account"),
        ("gpus", int, "GPUs per job"), ("cpus", int, "CPU cores per job"),
        ("mem", str, "memory per job, e.g. 16G"), ("time", str, "time limit, e.g. 04:00:00"),
    ):  # fmt: skip
        submit.add_argument(f"--{name}", type=kind, help=f"{text} (default: params.yaml slurm:)")
    submit.set_defaults(func=cmd_slurm_submit)
    status.set_defaults(func=cmd_slurm_status)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kdlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml and exit non-zero on any error")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    check.set_defaults(func=cmd_check)
    deps = sub.add_parser("deps", help="each stage's code deps for dvc.yaml (its import closure)")
    deps.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    deps.set_defaults(func=cmd_deps)
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
    report.add_argument("--dataset", help="only the experiments on this dataset (data.name)")
    report.add_argument("--alignment", default="cka/embedding",
                        help="analysis metric on the x axis of the accuracy scatter")  # fmt: skip
    report.set_defaults(func=cmd_report)
    preset = sub.add_parser(
        "preset", help="write a preset's params (configs/*.yaml) into params.yaml"
    )
    preset.add_argument("preset", type=Path, help="e.g. configs/fashion-mnist-kd.yaml")
    preset.add_argument("--params", type=Path, default=Path("params.yaml"))
    preset.set_defaults(func=cmd_preset)
    show = sub.add_parser("show", help="one row per experiment: state, accuracies, delta, CKA")
    _add_show_args(show)
    grid = sub.add_parser("grid", help="the grid of params.yaml as DVC experiments")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    queue = grid_sub.add_parser("queue", help="dvc exp run --queue for each new experiment")
    queue.add_argument("--params", type=Path, default=Path("params.yaml"))
    queue.add_argument("--dry-run", action="store_true", help="print the plan, queue nothing")
    queue.set_defaults(func=cmd_grid_queue)
    requeue = grid_sub.add_parser(
        "requeue", help="queue again the experiments whose queue worker was killed"
    )
    requeue.add_argument("--dead", action="store_true", required=True,
                         help="those `kdlab show` says are dead (worker vanished)")  # fmt: skip
    requeue.add_argument("--dry-run", action="store_true", help="print what would be queued")
    requeue.set_defaults(func=cmd_grid_requeue)
    doctor = sub.add_parser(
        "doctor", help="remove what killed runs left behind (temps, executor dirs), report the rest"
    )
    doctor.add_argument("--clean-remote", action="store_true",
                        help="also remove temps older than an hour on the DVC remotes")  # fmt: skip
    doctor.set_defaults(func=cmd_doctor)
    status = grid_sub.add_parser("status", help="the same table as `kdlab show`")
    _add_show_args(status)
    _add_slurm_parsers(sub)
    _add_bench_parser(sub)
    return parser


def _add_show_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--only", help="experiment names matching this glob, e.g. '*-logit-*'")
    parser.add_argument(
        "--sort",
        help="a column: name, state, dataset, pair, method, alpha, "
        "seed, teacher_acc, student_acc, delta, cka, agreement",
    )
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument(
        "-A",
        "--all-commits",
        action="store_true",
        help="experiments of every commit, not only HEAD's",
    )
    parser.add_argument("--width", type=int, help="table width (default: the terminal's)")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--md", action="store_true", help="a Markdown table")
    formats.add_argument("--csv", action="store_true", help="CSV with full names and log paths")
    formats.add_argument("--json", action="store_true", help="JSON records")
    parser.set_defaults(func=cmd_show)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`kdlab bench: error: argument --suite: invalid
    choice: 'x' (choose from ...)`), not the usage block first; `--help` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given, for provenance
    try:
        args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
    except KdlabError as exc:
        print(f"kdlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kdlab show | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 0
    except OSError as exc:  # a path that does not exist, a directory that cannot be written
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"kdlab {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
