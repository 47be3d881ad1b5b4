"""Training throughput: the reference loop, kdlab's loop and the compiled bound, side by side.

For one configuration (models, image shape, classes, split sizes, batch size) and every KD
method, on one device and in one process:

- reference: `kdlab.bench.reference` (DataLoader + per-sample torchvision transforms, fp32,
  `.item()` every step), timed over `steps` steps after `warmup` steps;
- kdlab: the pipeline's own `train_one_epoch` on a device-resident split of exactly `steps`
  batches, with the pipeline's settings for the device (bf16 autocast, compile on CUDA);
- bound: student forward + frozen-teacher forward + KD loss + backward, compiled (on CUDA;
  eager on CPU unless asked), on batches already on the device and augmented; nothing else:
  no data path, no optimizer step, no metrics.

Images per second are measured on synthetic uint8 data; the projected wall time of a run is
`epochs · (train images / train rate + test images / eval rate)`, compilation excluded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kdlab.bench.reference import (
    ReferenceData,
    ReferenceRun,
    make_reference_loader,
    reference_evaluate,
    reference_train_epoch,
)
from kdlab.config import TrainConfig
from kdlab.data.loader import Batch, BatchLoader, Split
from kdlab.distill.base import PairInfo, student_loss
from kdlab.distill.registry import METHODS, make_distiller
from kdlab.errors import ConfigError
from kdlab.models import make_model
from kdlab.training.loop import (
    LossSetup,
    autocast,
    evaluate,
    frozen_features,
    make_optimizer,
    make_step_functions,
    train_one_epoch,
)
from kdlab.training.run import build_state

log = logging.getLogger(__name__)

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What is trained, on what data, and how long each measurement runs."""

    name: str
    teacher: str
    student: str
    classes: int
    train_images: int
    test_images: int
    batch_size: int
    eval_batch_size: int
    steps: int
    """Timed training steps per loop and method."""
    warmup: int
    """Untimed steps first (cuDNN autotuning, compilation, worker start-up)."""
    image_size: int = 32
    channels: int = 3
    crop_padding: int = 4
    epochs: int = 150
    """Epochs of the projected run."""


CONFIGS = {
    # The study's setting: CIFAR-100-shaped data, resnet110 -> resnet56.
    "cifar": BenchConfig("cifar", "resnet110", "resnet56", 100, 50_000, 10_000, 128, 1024,
                         steps=100, warmup=20),
    # A configuration a 2-core CPU measures in minutes.
    "small": BenchConfig("small", "resnet20", "resnet8", 100, 50_000, 10_000, 64, 1024,
                         steps=40, warmup=5),
}  # fmt: skip


@dataclasses.dataclass
class MethodResult:
    method: str
    reference_ips: float
    kdlab_ips: float
    bound_ips: float
    kdlab_vs_reference: float = 0.0
    kdlab_vs_bound: float = 0.0
    projected_kdlab_s: float = 0.0
    projected_reference_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Options:
    device: torch.device
    reference_workers: int
    bound_compile: bool
    kdlab_compile: bool


def resolve_config(
    name: str, device: torch.device, steps: int | None = None, warmup: int | None = None
) -> BenchConfig:
    """`--config` (auto = cifar on CUDA, small elsewhere) with `--steps`/`--warmup` applied."""
    if name == "auto":
        name = "cifar" if device.type == "cuda" else "small"
    if name not in CONFIGS:
        raise ConfigError(f"--config must be one of auto, {', '.join(CONFIGS)}, got {name!r}")
    overrides = {k: v for k, v in (("steps", steps), ("warmup", warmup)) if v}
    return dataclasses.replace(CONFIGS[name], **overrides)


def _switch(name: str, value: str, auto: bool) -> bool:
    choices = {"auto": auto, "on": True, "off": False}
    if value not in choices:
        raise ConfigError(f"--{name} must be one of auto, on, off, got {value!r}")
    return choices[value]


def resolve_options(
    device: torch.device, reference_workers: int | None, kdlab_compile: str, bound_compile: str
) -> Options:
    """Defaults per device: on CUDA 4 reference workers (at most the cores) and both compiled;
    on CPU no workers and both eager."""
    cuda = device.type == "cuda"
    if reference_workers is None:
        reference_workers = min(4, len(os.sched_getaffinity(0))) if cuda else 0
    return Options(device, reference_workers,
                   bound_compile=_switch("bound-compile", bound_compile, cuda),
                   kdlab_compile=_switch("kdlab-compile", kdlab_compile, cuda))  # fmt: skip


def default_methods(cfg: BenchConfig) -> list[str]:
    """Every registered method that serves the configuration's pair, the pure model first."""
    from kdlab.architectures import feature_shapes
    from kdlab.distill.specs import methods_serving

    shapes = (
        feature_shapes(arch, cfg.classes, cfg.image_size) for arch in (cfg.student, cfg.teacher)
    )
    return ["none", *(m for m in methods_serving(PairInfo(*shapes)) if m != "none")]


def synthetic_split(count: int, cfg: BenchConfig, device: torch.device, seed: int) -> Split:
    """Random uint8 images (stored NHWC, viewed NCHW like a prepared dataset) and labels."""
    gen = torch.Generator().manual_seed(seed)
    shape = (count, cfg.image_size, cfg.image_size, cfg.channels)
    images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, cfg.classes, (count,), generator=gen)
    return Split(images.permute(0, 3, 1, 2), labels).to(device)


def head(split: Split, count: int) -> Split:
    return Split(split.images[:count], split.labels[:count])


def make_pair(cfg: BenchConfig, method: str, device: torch.device, train_size: int):
    """A fresh student (with its KD method for `train_size` samples) and a frozen teacher."""
    torch.manual_seed(0)
    student = make_model(cfg.student, cfg.channels, cfg.classes, cfg.image_size)
    teacher = make_model(cfg.teacher, cfg.channels, cfg.classes, cfg.image_size)
    teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    pair = PairInfo.probe(student, teacher, (cfg.image_size, cfg.image_size, cfg.channels),
                          train_size=train_size)  # fmt: skip
    distiller = make_distiller(method, None, pair)
    return student, distiller, teacher


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], object]) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def measure_reference(cfg: BenchConfig, method: str, train: Split, opts: Options) -> float:
    student, distiller, teacher = make_pair(cfg, method, opts.device, len(train))
    student, distiller = student.to(opts.device), distiller.to(opts.device)
    optimizer = make_optimizer([*student.parameters(), *distiller.parameters()], TrainConfig(),
                               opts.device, fast=False)  # fmt: skip
    run = ReferenceRun(student, distiller, optimizer, 0.5, 0.0, teacher)
    reading = ReferenceData(MEAN, STD, cfg.crop_padding, True, opts.reference_workers,
                            pin_memory=opts.device.type == "cuda")  # fmt: skip
    loader = make_reference_loader(train, cfg.batch_size, reading, train=True)
    reference_train_epoch(run, loader, opts.device, max_steps=cfg.warmup)
    seconds = timed(opts.device,
                    lambda: reference_train_epoch(run, loader, opts.device, cfg.steps))  # fmt: skip
    return cfg.steps * cfg.batch_size / seconds


def make_kdlab_run(cfg: BenchConfig, method: str, opts: Options, train_size: int):
    student, distiller, teacher = make_pair(cfg, method, opts.device, train_size)
    state = build_state(student, distiller, TrainConfig(), opts.device)
    loss_setup = LossSetup(alpha=0.0 if method == "none" else 0.5, label_smoothing=0.0,
                          teacher=teacher)  # fmt: skip
    steps = make_step_functions(state, loss_setup, opts.device, opts.kdlab_compile)
    return state, loss_setup, steps


def kdlab_loader(split: Split, cfg: BenchConfig) -> BatchLoader:
    return BatchLoader(split, cfg.batch_size, MEAN, STD, train=True, seed=0,
                       crop_padding=cfg.crop_padding, horizontal_flip=True)  # fmt: skip


def measure_kdlab(cfg: BenchConfig, method: str, train: Split, opts: Options) -> float:
    state, loss_setup, steps = make_kdlab_run(cfg, method, opts, len(train))
    warm = kdlab_loader(head(train, cfg.warmup * cfg.batch_size), cfg)
    train_one_epoch(state, loss_setup, warm, opts.device, steps)
    loader = kdlab_loader(head(train, cfg.steps * cfg.batch_size), cfg)
    seconds = timed(opts.device, lambda: train_one_epoch(state, loss_setup, loader, opts.device,
                                                         steps))  # fmt: skip
    return cfg.steps * cfg.batch_size / seconds


def resident_batches(train: Split, cfg: BenchConfig, count: int = 8) -> list:
    """A few batches already augmented and normalised on the device."""
    loader = kdlab_loader(head(train, count * cfg.batch_size), cfg)
    return [Batch(*(None if t is None else t.clone() for t in batch)) for batch in loader]


def measure_bound(cfg: BenchConfig, method: str, train: Split, opts: Options) -> float:
    student, distiller, teacher = make_pair(cfg, method, opts.device, len(train))
    student = student.to(opts.device, memory_format=torch.channels_last).train()
    distiller = distiller.to(opts.device).train()
    alpha = 0.0 if method == "none" else 0.5

    def forward_loss(batch: Batch) -> torch.Tensor:
        with autocast(opts.device):
            features = student.forward_features(batch.images)
            target = None
            if distiller.needs_teacher:
                target = frozen_features(teacher, batch.images, inference=False)
            return student_loss(distiller, alpha, features, target, batch).total

    loss_fn = torch.compile(forward_loss, dynamic=False) if opts.bound_compile else forward_loss
    params = [p for p in (*student.parameters(), *distiller.parameters()) if p.requires_grad]
    batches = resident_batches(train, cfg)

    def run(count: int) -> None:
        for i in range(count):
            for p in params:
                p.grad = None
            loss_fn(batches[i % len(batches)]).backward()

    run(cfg.warmup)
    return cfg.steps * cfg.batch_size / timed(opts.device, lambda: run(cfg.steps))


def measure_eval(cfg: BenchConfig, test: Split, opts: Options) -> dict[str, float]:
    """Images/s of evaluation: kdlab's (its compiled forward when it compiles) and the reference."""
    state, _loss_setup, steps = make_kdlab_run(cfg, "none", opts, len(test))
    loader = BatchLoader(test, cfg.eval_batch_size, MEAN, STD, train=False)
    evaluate(state.model, loader, opts.device, steps.evaluate)  # warm-up (and compilation)
    kdlab = timed(opts.device,
                  lambda: evaluate(state.model, loader, opts.device, steps.evaluate))  # fmt: skip
    reading = ReferenceData(MEAN, STD, workers=opts.reference_workers,
                            pin_memory=opts.device.type == "cuda")  # fmt: skip
    ref_loader = make_reference_loader(test, cfg.eval_batch_size, reading, train=False)
    reference = timed(opts.device, lambda: reference_evaluate(state.model, ref_loader,
                                                              opts.device))  # fmt: skip
    return {"kdlab_ips": len(test) / kdlab, "reference_ips": len(test) / reference}


def project(cfg: BenchConfig, train_ips: float, eval_ips: float) -> float:
    return cfg.epochs * (cfg.train_images / train_ips + cfg.test_images / eval_ips)


def run_benchmark(
    cfg: BenchConfig, methods: list[str], opts: Options, progress=lambda it: it
) -> dict:
    """Every measurement of one configuration; a JSON-ready dict."""
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"--methods must be among {', '.join(METHODS)}, got {method!r}")
    train = synthetic_split(max(cfg.steps, cfg.warmup, 8) * cfg.batch_size, cfg, opts.device, 0)
    test = synthetic_split(cfg.test_images, cfg, opts.device, 1)
    evals = measure_eval(cfg, test, opts)
    rows = []
    for method in progress(methods):
        log.info("%s: %s -> %s, method %s", cfg.name, cfg.teacher, cfg.student, method)
        row = MethodResult(
            method,
            reference_ips=measure_reference(cfg, method, train, opts),
            kdlab_ips=measure_kdlab(cfg, method, train, opts),
            bound_ips=measure_bound(cfg, method, train, opts),
        )
        row.kdlab_vs_reference = row.kdlab_ips / row.reference_ips
        row.kdlab_vs_bound = row.kdlab_ips / row.bound_ips
        row.projected_kdlab_s = project(cfg, row.kdlab_ips, evals["kdlab_ips"])
        row.projected_reference_s = project(cfg, row.reference_ips, evals["reference_ips"])
        rows.append(row)
    return {
        "machine": describe_machine(opts.device),
        "config": dataclasses.asdict(cfg),
        "options": {"reference_workers": opts.reference_workers,
                    "bound_compiled": opts.bound_compile, "kdlab_compiled": opts.kdlab_compile},
        "eval": evals,
        "rows": [dataclasses.asdict(r) for r in rows],
    }  # fmt: skip


def describe_machine(device: torch.device) -> dict[str, str | int]:
    cpu = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
              if line.startswith("model name")]  # fmt: skip
    cpu = models[0] if models else cpu
    machine = {"device": device.type, "cpu": cpu, "cpus": len(os.sched_getaffinity(0)),
               "torch": torch.__version__}  # fmt: skip
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    return machine


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def format_table(result: dict) -> str:
    """The result as a Markdown table, with the machine and the configuration above it."""
    cfg, machine, opts = result["config"], result["machine"], result["options"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cpus']} cores)"
    lines = [
        f"{cfg['name']}: {cfg['teacher']} -> {cfg['student']}, {cfg['channels']}x"
        f"{cfg['image_size']}x{cfg['image_size']}, {cfg['classes']} classes, batch "
        f"{cfg['batch_size']}, {cfg['steps']} timed steps; {where}, torch {machine['torch']}",
        f"reference: DataLoader with {opts['reference_workers']} workers; kdlab "
        f"{'compiled' if opts['kdlab_compiled'] else 'eager'}; bound "
        f"{'compiled' if opts['bound_compiled'] else 'eager'}; eval images/s: kdlab "
        f"{result['eval']['kdlab_ips']:.0f}, reference {result['eval']['reference_ips']:.0f}",
        "",
        f"| method | reference img/s | kdlab img/s | bound img/s | kdlab/reference | kdlab/bound "
        f"| {cfg['epochs']} epochs, kdlab | {cfg['epochs']} epochs, reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['reference_ips']:.0f} | {row['kdlab_ips']:.0f} | "
            f"{row['bound_ips']:.0f} | {row['kdlab_vs_reference']:.2f}x | "
            f"{row['kdlab_vs_bound']:.2f} | {_duration(row['projected_kdlab_s'])} | "
            f"{_duration(row['projected_reference_s'])} |"
        )
    return "\n".join(lines) + "\n"
