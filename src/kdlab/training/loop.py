"""One training loop for teachers and students.

Per step nothing is read back to the host: losses and correct counts accumulate in device
tensors and are read once per epoch. bf16 autocast on CUDA; exact float32 on CPU. The frozen
teacher runs under inference_mode; the step can be compiled (`<role>.compile`). The data side
(device-resident uint8, on-device augmentation, fused normalisation) is kdlab.data.loader.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import TrainConfig
from kdlab.data.loader import Batch, BatchLoader, Stream, epoch_generator
from kdlab.distill.base import Distiller, student_loss
from kdlab.models import FeatureModel
from kdlab.models.base import Features, features_of, logits_of
from kdlab.training import stop


@dataclasses.dataclass
class TrainState:
    """Everything that changes during training and must be checkpointed to resume exactly."""

    model: FeatureModel
    distiller: Distiller
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0
    """Number of completed epochs."""
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """Per-epoch metrics of the completed epochs."""


@dataclasses.dataclass(frozen=True)
class LossSetup:
    """What the student loss (1 − alpha)·CE + alpha·w·L_method is made of beyond the KD method:
    alpha, the label smoothing of CE (pure models only) and the frozen teacher (None: pure)."""

    alpha: float
    label_smoothing: float
    teacher: FeatureModel | None = None


def make_optimizer(
    params: list[nn.Parameter], cfg: TrainConfig, device: torch.device, fast: bool = True
):
    """SGD with momentum and weight decay; fused on CUDA, foreach (multi-tensor) on CPU.

    `fast=False` leaves the implementation to torch's default (the reference loop's choice).
    """
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        **(impl if fast else {}),
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch schedule: cosine to 0 over `epochs`, or multistep at `milestones`."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
        )
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay exact and reproducible)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def frozen_features(teacher: FeatureModel, images: torch.Tensor, inference: bool,
                    mask: torch.Tensor | None = None) -> Features:  # fmt: skip
    """The frozen teacher's forward, without autograd.

    Eagerly it runs under `inference_mode` (no version counters, no autograd records) and its
    outputs are copied out, because inference tensors cannot be saved for the student's
    backward (the KD terms multiply by them); the copy is tiny next to the forward. Inside a
    compiled step it runs under `no_grad`, which the compiler turns into the same graph.
    """
    if not inference:
        with torch.no_grad():
            return features_of(teacher, images, mask)
    with torch.inference_mode():
        features = features_of(teacher, images, mask)
    return Features(
        stages={name: t.clone() for name, t in features.stages.items()},
        embedding=features.embedding.clone(),
        logits=features.logits.clone(),
        extras={name: t.clone() for name, t in features.extras.items()},
    )


@dataclasses.dataclass
class StepFunctions:
    """The forward of a training step and of evaluation, eager or compiled; built once per run.

    `train(batch)` returns (loss to backpropagate, per-batch sums (4,): loss·B, CE·B, KD·B,
    correct); `evaluate(images, mask)` returns logits (mask: a sequence batch's padding).
    """

    train: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[..., torch.Tensor]
    compiled: bool = False


def make_eval_forward(model: nn.Module, device: torch.device):
    """images (and a sequence batch's padding mask) -> float32 logits, under autocast (what
    evaluation computes per batch)."""

    def eval_forward(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        with autocast(device):
            return logits_of(model, images, mask).float()

    return eval_forward


def make_step_functions(
    state: TrainState, loss_setup: LossSetup, device: torch.device, compile: bool = False
) -> StepFunctions:
    def train_forward(batch: Batch):
        with autocast(device):
            student = features_of(state.model, batch.images, batch.mask)
            teacher = None
            if state.distiller.needs_teacher:
                teacher = frozen_features(loss_setup.teacher, batch.images, not compile,
                                          batch.mask)  # fmt: skip
            terms = student_loss(
                state.distiller, loss_setup.alpha, student, teacher, batch,
                loss_setup.label_smoothing,
            )  # fmt: skip
        size = batch.labels.shape[0]
        correct = (student.logits.argmax(1) == batch.labels).sum()
        sums = torch.stack([terms.total * size, terms.ce * size, terms.kd * size, correct])
        return terms.total, sums.detach()

    eval_forward = make_eval_forward(state.model, device)
    if not compile:
        return StepFunctions(train_forward, eval_forward)
    # Static shapes: training batches all have one size (the last partial batch is dropped);
    # evaluation sees at most two sizes, so at most two graphs.
    return StepFunctions(
        torch.compile(train_forward, dynamic=False),
        torch.compile(eval_forward, dynamic=False),
        compiled=True,
    )


def train_one_epoch(
    state: TrainState,
    loss_setup: LossSetup,
    loader: BatchLoader,
    device: torch.device,
    steps: StepFunctions | None = None,
    batches: Callable[[BatchLoader], Iterable] = iter,
) -> dict[str, float]:
    """One pass over the training split; returns mean loss, CE, KD term and accuracy.
    `batches` wraps the loader (a progress bar)."""
    steps = steps or make_step_functions(state, loss_setup, device)
    state.model.train()
    state.distiller.train()
    sums = torch.zeros(4, device=device)  # loss·B, ce·B, kd·B, correct
    seen = 0
    for batch in batches(loader):
        stop.check()
        total, batch_sums = steps.train(batch)
        state.optimizer.zero_grad(set_to_none=True)
        total.backward()
        state.optimizer.step()
        sums += batch_sums
        seen += batch.labels.shape[0]
    loss, ce, kd, correct = (sums / seen).tolist()  # the one host sync of the epoch
    if not state.distiller.needs_teacher:
        return {"loss": loss, "acc": correct}
    return {"loss": loss, "ce": ce, "kd": kd, "acc": correct}


def pretrain_student(
    state: TrainState, loss_setup: LossSetup, loader: BatchLoader, device: torch.device
) -> None:
    """A method's own pre-training of the student (FitNets' hint stage) before KD training.

    Uses the loader's pre-training stream, so its batches differ from the main epochs'.
    """
    state.model.train()
    state.distiller.train()
    trainable = [
        p for p in (*state.model.parameters(), *state.distiller.parameters()) if p.requires_grad
    ]
    defaults = state.optimizer.defaults
    optimizer = torch.optim.SGD(
        trainable, lr=defaults["lr"], momentum=defaults["momentum"],
        weight_decay=defaults["weight_decay"],
    )  # fmt: skip
    for epoch in range(state.distiller.pretraining_epochs()):
        loader.set_epoch(epoch, Stream.PRETRAIN)
        for batch in loader:
            stop.check()
            with autocast(device):
                student = features_of(state.model, batch.images, batch.mask)
                teacher = frozen_features(loss_setup.teacher, batch.images, True, batch.mask)
                loss = state.distiller.pretrain_loss(student, teacher)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Plain cross-entropy (no smoothing) and accuracy on a split, without autograd.

    `forward` (images, mask -> float logits) defaults to the model itself under autocast.
    """
    forward = forward or make_eval_forward(model, device)
    model.eval()
    sums = torch.zeros(2, device=device)
    seen = 0
    with torch.inference_mode():
        for images, labels, _indices, mask in loader:
            logits = forward(images, mask)
            sums[0] += F.cross_entropy(logits, labels, reduction="sum")
            sums[1] += (logits.argmax(1) == labels).sum()
            seen += labels.shape[0]
    loss, correct = (sums / seen).tolist()
    return {"loss": loss, "acc": correct}


def run_epochs(
    state: TrainState,
    loss_setup: LossSetup,
    train_loader: BatchLoader,
    test_loader: BatchLoader,
    epochs: int,
    device: torch.device,
    on_epoch_end: Callable[[TrainState], None],
    epoch_progress: Callable[[range], range] = lambda r: r,
    compile: bool = False,
    batch_progress: Callable[[BatchLoader, int], Iterable] = lambda loader, epoch: iter(loader),
) -> TrainState:
    """Train from `state.epoch` to `epochs`; `on_epoch_end` checkpoints and logs each epoch;
    `batch_progress(loader, epoch)` wraps each epoch's batches (a progress bar)."""
    steps = make_step_functions(state, loss_setup, device, compile)
    for epoch in epoch_progress(range(state.epoch, epochs)):
        train_loader.set_epoch(epoch)
        state.distiller.begin_epoch(epoch, epoch_generator(train_loader.seed, epoch,
                                                           Stream.KD_METHOD))  # fmt: skip
        lr = state.optimizer.param_groups[0]["lr"]
        train = train_one_epoch(state, loss_setup, train_loader, device, steps,
                                lambda loader, e=epoch: batch_progress(loader, e))  # fmt: skip
        state.scheduler.step()
        test = evaluate(state.model, test_loader, device, steps.evaluate)
        state.epoch = epoch + 1
        state.history.append(
            {
                **{f"train/{k}": v for k, v in train.items()},
                **{f"test/{k}": v for k, v in test.items()},
                "lr": lr,
            }
        )
        on_epoch_end(state)
    return state
