"""Time to accuracy on real data: kdlab's training loop against the reference loop.

Images per second on synthetic data (kdlab.bench.train) say how fast a step is; this says how
long a researcher waits for a result. On Fashion-MNIST (the one real dataset every machine here
has), the same network from the same initialisation is trained with the same optimiser, schedule
and augmentation by both loops, one after the other in one process; after every epoch the whole
test split is evaluated, and the clock (training and evaluation, nothing else) stops at the
first epoch whose test accuracy reaches the target. Both loops shuffle and augment with their
own random streams, so the epoch that reaches the target may differ: the table says which.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import tempfile
import time
from pathlib import Path

import torch

from kdlab.bench.reference import (
    ReferenceData,
    ReferenceRun,
    make_reference_loader,
    reference_evaluate,
    reference_train_epoch,
)
from kdlab.bench.train import describe_machine, synchronize
from kdlab.config import TrainConfig
from kdlab.data.datasets import DATASETS, prepare_dataset
from kdlab.data.loader import BatchLoader, Dataset, load_dataset
from kdlab.distill.base import PairInfo
from kdlab.distill.registry import make_distiller
from kdlab.errors import ConfigError
from kdlab.models import make_model
from kdlab.training.loop import (
    LossSetup,
    evaluate,
    make_scheduler,
    make_step_functions,
    train_one_epoch,
)
from kdlab.training.run import build_state

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RealConfig:
    dataset: str = "fashion_mnist"
    arch: str = "resnet8"
    train_subset: int = 10_000
    target_acc: float = 0.85
    max_epochs: int = 10
    batch_size: int = 64
    seed: int = 0

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, "
                              f"got {self.dataset!r}")  # fmt: skip
        if not 0 < self.target_acc < 1:
            raise ConfigError(f"--target-acc must be in (0, 1), got {self.target_acc}")
        if self.max_epochs < 1:
            raise ConfigError(f"--max-epochs must be at least 1, got {self.max_epochs}")


@dataclasses.dataclass
class LoopResult:
    loop: str
    epochs_to_target: int | None
    seconds_to_target: float | None
    accuracies: list[float]
    seconds: list[float]  # cumulative after each epoch


def train_config(cfg: RealConfig) -> TrainConfig:
    """kdlab's student defaults, over max_epochs (the schedule both loops follow)."""
    return TrainConfig(arch=cfg.arch, epochs=cfg.max_epochs, batch_size=cfg.batch_size)


def fresh_model(cfg: RealConfig, dataset: Dataset, device: torch.device):
    torch.manual_seed(cfg.seed)
    model = make_model(cfg.arch, dataset.in_channels, dataset.num_classes, dataset.image_size)
    shape = (dataset.image_size, dataset.image_size, dataset.in_channels)
    distiller = make_distiller("none", None, PairInfo.probe(model, model, shape))
    return model, distiller


def until_target(cfg: RealConfig, name: str, epoch_fn) -> LoopResult:
    """Run `epoch_fn()` (one epoch + test accuracy) until the target or max_epochs."""
    accs, seconds, elapsed = [], [], 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        start = time.perf_counter()
        acc = epoch_fn()
        elapsed += time.perf_counter() - start
        accs.append(acc)
        seconds.append(elapsed)
        log.info("%s epoch %d: test acc %.4f after %.1f s", name, epoch, acc, elapsed)
        if acc >= cfg.target_acc:
            return LoopResult(name, epoch, elapsed, accs, seconds)
    return LoopResult(name, None, None, accs, seconds)


def run_kdlab(cfg: RealConfig, dataset: Dataset, device: torch.device) -> LoopResult:
    model, distiller = fresh_model(cfg, dataset, device)
    train_cfg = train_config(cfg)
    state = build_state(model, distiller, train_cfg, device)
    loss_setup = LossSetup(alpha=0.0, label_smoothing=0.0)
    steps = make_step_functions(state, loss_setup, device, compile=device.type == "cuda")
    mean, std = dataset.meta["mean"], dataset.meta["std"]
    spec = DATASETS[cfg.dataset]
    train = BatchLoader(dataset.train.to(device), cfg.batch_size, mean, std, train=True,
                        seed=cfg.seed, crop_padding=spec.crop_padding,
                        horizontal_flip=spec.horizontal_flip)  # fmt: skip
    test = BatchLoader(dataset.test.to(device), train_cfg.eval_batch_size, mean, std, train=False)

    epochs = itertools.count()

    def epoch() -> float:
        train.set_epoch(next(epochs))
        train_one_epoch(state, loss_setup, train, device, steps)
        state.scheduler.step()
        result = evaluate(state.model, test, device, steps.evaluate)
        synchronize(device)
        return result["acc"]

    return until_target(cfg, "kdlab", epoch)


def run_reference(cfg: RealConfig, dataset: Dataset, device: torch.device) -> LoopResult:
    from kdlab.training.loop import make_optimizer

    model, distiller = fresh_model(cfg, dataset, device)
    model, distiller = model.to(device), distiller.to(device)
    train_cfg = train_config(cfg)
    optimizer = make_optimizer(list(model.parameters()), train_cfg, device, fast=False)
    scheduler = make_scheduler(optimizer, train_cfg)
    run = ReferenceRun(model, distiller, optimizer)
    spec = DATASETS[cfg.dataset]
    cuda = device.type == "cuda"
    reading = ReferenceData(dataset.meta["mean"], dataset.meta["std"], spec.crop_padding,
                            spec.horizontal_flip, workers=4 if cuda else 0,
                            pin_memory=cuda)  # fmt: skip
    train = make_reference_loader(dataset.train, cfg.batch_size, reading, train=True)
    test = make_reference_loader(dataset.test, train_cfg.eval_batch_size, reading, train=False)

    def epoch() -> float:
        reference_train_epoch(run, train, device)
        scheduler.step()
        return reference_evaluate(run.model, test, device)["acc"]

    return until_target(cfg, "reference", epoch)


def run_real_benchmark(cfg: RealConfig, device: torch.device, data_dir: Path | None) -> dict:
    cfg.validate()
    with tempfile.TemporaryDirectory(prefix="kdlab-bench-") as scratch:
        out = Path(scratch) / cfg.dataset
        log.info("preparing %s (train_subset %d)", cfg.dataset, cfg.train_subset)
        prepare_dataset(cfg.dataset, out, download_dir=data_dir, train_subset=cfg.train_subset)
        dataset = load_dataset(out)
    results = [run_kdlab(cfg, dataset, device), run_reference(cfg, dataset, device)]
    kdlab, reference = results
    ratio = None
    if kdlab.seconds_to_target and reference.seconds_to_target:
        ratio = reference.seconds_to_target / kdlab.seconds_to_target
    return {"machine": describe_machine(device), "config": dataclasses.asdict(cfg),
            "train_images": len(dataset.train), "test_images": len(dataset.test),
            "loops": [dataclasses.asdict(r) for r in results],
            "reference_over_kdlab": ratio}  # fmt: skip


def format_real_table(result: dict) -> str:
    cfg, machine = result["config"], result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cpus']} cores)"
    lines = [
        f"time to {cfg['target_acc']:.0%} test accuracy: {cfg['arch']} on {cfg['dataset']} "
        f"({result['train_images']} train / {result['test_images']} test images), batch "
        f"{cfg['batch_size']}, at most {cfg['max_epochs']} epochs; {where}, torch "
        f"{machine['torch']}",
        "",
        "| loop | epochs to target | seconds to target | s/epoch | test acc per epoch |",
        "|---|---:|---:|---:|---|",
    ]
    for loop in result["loops"]:
        reached = loop["epochs_to_target"] is not None
        per_epoch = loop["seconds"][-1] / len(loop["seconds"])
        accs = ", ".join(f"{a:.3f}" for a in loop["accuracies"])
        lines.append(
            f"| {loop['loop']} | {loop['epochs_to_target'] if reached else 'not reached'} | "
            f"{loop['seconds_to_target']:.1f} | " if reached else
            f"| {loop['loop']} | not reached | – | "
        )  # fmt: skip
        lines[-1] += f"{per_epoch:.1f} | {accs} |"
    ratio = result["reference_over_kdlab"]
    lines += ["", f"reference / kdlab, seconds to target: "
                  f"{'–' if ratio is None else f'{ratio:.2f}x'}"]  # fmt: skip
    return "\n".join(lines) + "\n"
