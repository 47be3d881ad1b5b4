"""Train one role (teacher or student) end to end: set-up, resume, outputs that are complete.

Outputs of a role (the stage's DVC outputs):
    <model_dir>/model.pt                    final state_dict + arch + params + epoch + metrics
    <model_dir>/milestones/epoch_XXXX.pt    the same, after each epoch in `save_epochs`
    <metrics_dir>/                          DVCLive: metrics.json and per-epoch plot data
Work files, beside the resume checkpoint (not DVC outputs, so DVC never deletes them):
    <resume_path>                           the last complete epoch, to resume a killed run
    <resume_path.parent>/milestones/        milestones of this run, kept across a resume

DVC deletes a stage's outputs before it runs. So nothing is written into them while training:
milestones are kept beside the resume checkpoint, and only when the last epoch is done are the
model directory and the metrics directory written, each in a temporary directory renamed into
place. A run stopped at any point leaves no output that looks complete, and a resumed run ends
with exactly the files of an uninterrupted one: same milestones, same bytes.

The resume checkpoint carries a fingerprint of everything that determines the run: params,
dataset and teacher checksums, the stage's code (the same files DVC tracks for it, see
kdlab.codedeps), the device type. A checkpoint with another fingerprint, or whose milestones are
missing or corrupt, is never resumed from: it is logged and the run starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from kdlab.checksum import sha256_file
from kdlab.codedeps import code_digest
from kdlab.config import Params, TrainConfig
from kdlab.data.loader import BatchLoader, Dataset
from kdlab.distill.base import Distiller
from kdlab.errors import CheckpointError
from kdlab.fsutil import atomic_directory, check_writable
from kdlab.models import FeatureModel, make_model
from kdlab.progress import bar
from kdlab.training.checkpoint import (
    MODEL_FORMAT,
    RESUME_FORMAT,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from kdlab.training.loop import (
    LossSetup,
    TrainState,
    make_optimizer,
    make_scheduler,
    pretrain_student,
    run_epochs,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RoleOutputs:
    """Where one role writes; paths come from the stage's command line (dvc.yaml)."""

    model_dir: Path
    metrics_dir: Path
    resume_path: Path

    @property
    def model_path(self) -> Path:
        return self.model_dir / "model.pt"

    def milestone_path(self, epoch: int) -> Path:
        return self.model_dir / "milestones" / f"epoch_{epoch:04d}.pt"

    @property
    def work_milestones_dir(self) -> Path:
        """Milestones while training: beside the resume checkpoint, never deleted by DVC."""
        return self.resume_path.parent / "milestones"

    def work_milestone_path(self, epoch: int) -> Path:
        return self.work_milestones_dir / f"epoch_{epoch:04d}.pt"


@dataclasses.dataclass(frozen=True)
class RoleSetup:
    """What differs between a teacher and a student run: networks, KD term, loss, identity."""

    model: FeatureModel
    distiller: Distiller
    loss_setup: LossSetup
    stage_module: str
    """The stage's module; its import closure is the code in the fingerprint."""
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Checksums of the input files besides the dataset (teacher, method artefacts)."""


def teacher_setup(params: Params, dataset: Dataset) -> RoleSetup:
    """A pure model trained on CE with the teacher's label smoothing; no KD method involved."""
    from kdlab.distill.none import NoDistillation

    cfg = params.teacher
    model = make_model(cfg.arch, dataset.in_channels, dataset.num_classes, dataset.image_size,
                       cfg.size)  # fmt: skip
    loss_setup = LossSetup(alpha=0.0, label_smoothing=cfg.label_smoothing)
    return RoleSetup(model, NoDistillation(None), loss_setup, "kdlab.stages.train_teacher")


def role_params(role: str, params: Params) -> dict[str, Any]:
    """The params sections that determine a role's training (checkpoint metadata, fingerprint)."""
    sections = {"seed": params.seed, "data": params.section("data"), role: params.section(role)}
    if role == "student":
        sections["kd"] = params.section("kd")
    return sections


def run_fingerprint(
    role: str, params: Params, dataset: Dataset, device: torch.device, setup: RoleSetup
) -> str:
    identity = {
        "role": role,
        "params": role_params(role, params),
        "dataset_sha256": dataset.meta["sha256"],
        "inputs": setup.inputs,
        "code": code_digest(setup.stage_module),
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_frozen_teacher(path: Path, device: torch.device) -> tuple[FeatureModel, str]:
    """The teacher in eval mode with gradients off; also the sha256 of its file."""
    teacher, _ = load_model(path, device)
    teacher.requires_grad_(False)
    return teacher.to(memory_format=torch.channels_last), sha256_file(path)


def model_payload(
    role: str, state: TrainState, cfg: TrainConfig, params: Params, dataset: Dataset
) -> dict:
    return {
        "format": MODEL_FORMAT,
        "role": role,
        "arch": cfg.arch,
        **arch_size(cfg),
        "in_channels": dataset.in_channels,
        "num_classes": dataset.num_classes,
        "image_size": dataset.image_size,
        "state_dict": state.model.state_dict(),
        "distiller_state_dict": state.distiller.model_state_dict(),
        "params": role_params(role, params),
        "epoch": state.epoch,
        "metrics": dict(state.history[-1]) if state.history else {},
    }


def arch_size(cfg: TrainConfig) -> dict[str, Any]:
    """A model checkpoint's `size` (what load_model rebuilds the network with), only where
    `<role>.size` is set: a preset's checkpoint stays byte-identical to what it was."""
    return {"size": dict(cfg.size)} if cfg.size else {}


def resume_payload(state: TrainState, fingerprint: str) -> dict:
    return {
        "format": RESUME_FORMAT,
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "model": state.model.state_dict(),
        "distiller": state.distiller.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "history": state.history,
    }


def _resumable_payload(
    outputs: RoleOutputs, fingerprint: str, save_epochs: tuple[int, ...]
) -> dict | None:
    """The resume checkpoint's payload if it belongs to this exact run and every milestone it
    has passed is present and intact; else None (with the reason logged)."""
    resume_path = outputs.resume_path
    if not resume_path.exists():
        return None
    try:
        payload = load_checkpoint(resume_path, RESUME_FORMAT)
    except CheckpointError as exc:
        log.warning("not resuming: %s; starting fresh", exc)
        return None
    if payload["fingerprint"] != fingerprint:
        log.warning(
            "not resuming from %s: it was written by a run with other params, data, teacher or "
            "code; starting fresh",
            resume_path,
        )
        return None
    for epoch in (e for e in save_epochs if e <= int(payload["epoch"])):
        try:
            load_checkpoint(outputs.work_milestone_path(epoch), MODEL_FORMAT)
        except CheckpointError as exc:
            log.warning("not resuming from %s: milestone %s; starting fresh", resume_path, exc)
            return None
    return payload


def try_resume(state: TrainState, outputs: RoleOutputs, fingerprint: str, cfg: TrainConfig):
    """Restore `state` from the resume checkpoint if it belongs to this exact run; otherwise
    remove this role's work milestones, which belong to another run."""
    payload = _resumable_payload(outputs, fingerprint, cfg.save_epochs)
    if payload is None:
        shutil.rmtree(outputs.work_milestones_dir, ignore_errors=True)
        return
    state.model.load_state_dict(payload["model"])
    state.distiller.load_state_dict(payload["distiller"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    state.epoch = int(payload["epoch"])
    state.history = list(payload["history"])
    log.info(
        "resuming from %s at epoch %d (%d epochs already complete)",
        outputs.resume_path,
        state.epoch,
        state.epoch,
    )


def write_metrics(metrics_dir: Path, history: list[dict[str, float]]) -> None:
    """All epochs' metrics through DVCLive, into a temporary directory renamed into place."""
    from dvclive import Live

    with atomic_directory(metrics_dir) as tmp:
        # dvcyaml=None: metrics and plots are declared in dvc.yaml by hand, never rewritten.
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None, report=None)
        for metrics in history:
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()
        live.end()


def write_model_dir(outputs: RoleOutputs, final: dict, save_epochs: tuple[int, ...]) -> None:
    """model.pt and the verified milestones, into a temporary directory renamed into place."""
    with atomic_directory(outputs.model_dir) as tmp:
        for epoch in save_epochs:
            source = outputs.work_milestone_path(epoch)
            load_checkpoint(source, MODEL_FORMAT)  # a corrupt milestone must never be published
            target = tmp / outputs.milestone_path(epoch).relative_to(outputs.model_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        save_checkpoint(final, tmp / outputs.model_path.name)


def build_state(
    model: FeatureModel, distiller: Distiller, cfg: TrainConfig, device: torch.device
) -> TrainState:
    model = model.to(device, memory_format=torch.channels_last)
    distiller = distiller.to(device)
    trainable = [p for p in (*model.parameters(), *distiller.parameters()) if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg, device)
    return TrainState(model, distiller, optimizer, make_scheduler(optimizer, cfg))


def make_loaders(cfg: TrainConfig, params: Params, dataset: Dataset, device: torch.device):
    mean, std = dataset.meta["mean"], dataset.meta["std"]
    train = BatchLoader(
        dataset.train.to(device),
        cfg.batch_size,
        mean,
        std,
        train=True,
        seed=params.seed,
        crop_padding=params.data.resolved_crop_padding,
        horizontal_flip=params.data.resolved_horizontal_flip,
        time_crop=params.data.time_crop,
        scaling=params.data.scaling,
        jitter=params.data.jitter,
    )
    test = BatchLoader(dataset.test.to(device), cfg.eval_batch_size, mean, std, train=False)
    return train, test


def checkpoint_bytes_estimate(state: TrainState) -> int:
    """About what one model checkpoint takes: every parameter and buffer of model + KD term."""
    tensors = [*state.model.state_dict().values(), *state.distiller.state_dict().values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def check_outputs_writable(outputs: RoleOutputs, state: TrainState, cfg: TrainConfig) -> None:
    """Before the first epoch: every directory takes files, and there is room for the run
    (the resume checkpoint holds optimizer state too; milestones exist twice at the end)."""
    size = checkpoint_bytes_estimate(state)
    check_writable(outputs.resume_path.parent, size * (4 + 2 * len(cfg.save_epochs)))
    for directory in (outputs.model_dir.parent, outputs.metrics_dir.parent):
        check_writable(directory)


def train_role(
    role: str,
    params: Params,
    dataset: Dataset,
    device: torch.device,
    outputs: RoleOutputs,
    setup: RoleSetup,
) -> dict[str, float]:
    """Train the teacher or the student described by `params` and `setup`; returns its final
    metrics. The outputs are written only once the last epoch is done (module docstring)."""
    cfg: TrainConfig = getattr(params, role)
    state = build_state(setup.model, setup.distiller, cfg, device)
    check_outputs_writable(outputs, state, cfg)
    fingerprint = run_fingerprint(role, params, dataset, device, setup)
    try_resume(state, outputs, fingerprint, cfg)
    train_loader, test_loader = make_loaders(cfg, params, dataset, device)
    log.info("training %s %s on %s (%d train / %d test images) on %s, kd.method=%s",
             role, cfg.arch, dataset.meta["name"], len(dataset.train), len(dataset.test), device,
             params.kd.method if role == "student" else "none")  # fmt: skip
    if state.epoch == 0 and state.distiller.pretraining_epochs() > 0:
        # Deterministic from the seed, so a run killed during it simply redoes it.
        log.info("pre-training the student for %d epochs", state.distiller.pretraining_epochs())
        pretrain_student(state, setup.loss_setup, train_loader, device)
    compile = cfg.use_compile(device.type)
    if compile:
        log.info("compiling the training step and evaluation (%s.compile)", role)
    checkpoint = partial(checkpoint_epoch, role, cfg, params, dataset, outputs, fingerprint)
    run_epochs(state, setup.loss_setup, train_loader, test_loader, cfg.epochs, device, checkpoint,
               partial(epoch_bar, role, state.epoch, cfg.epochs), compile=compile,
               batch_progress=partial(batch_bar, role, cfg.epochs))  # fmt: skip
    write_model_dir(outputs, model_payload(role, state, cfg, params, dataset), cfg.save_epochs)
    write_metrics(outputs.metrics_dir, state.history)
    log.info("wrote %s and %s (test acc %.4f)", outputs.model_dir, outputs.metrics_dir,
             state.history[-1]["test/acc"])  # fmt: skip
    return state.history[-1]


def checkpoint_epoch(
    role: str, cfg: TrainConfig, params: Params, dataset: Dataset, outputs: RoleOutputs,
    fingerprint: str, state: TrainState,
) -> None:  # fmt: skip
    """After each epoch: the milestone (if it is one), then the resume checkpoint, then a log
    line. The milestone first: a resume checkpoint never points past a missing milestone."""
    if state.epoch in cfg.save_epochs:
        payload = model_payload(role, state, cfg, params, dataset)
        save_checkpoint(payload, outputs.work_milestone_path(state.epoch))
    save_checkpoint(resume_payload(state, fingerprint), outputs.resume_path)
    last = state.history[-1]
    log.info("%s epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.4g",
             role, state.epoch, cfg.epochs, last["train/loss"], last["train/acc"],
             last["test/loss"], last["test/acc"], last["lr"])  # fmt: skip


def epoch_bar(role: str, done: int, epochs: int, remaining: range):
    """A bar over epochs on a terminal; under DVC's log capture or SLURM the log lines remain."""
    return tqdm(remaining, desc=f"train {role}", initial=done, total=epochs, file=sys.stderr,
                unit="epoch", dynamic_ncols=True, disable=None)  # fmt: skip


def batch_bar(role: str, epochs: int, loader, epoch: int):
    """Within an epoch: batches as images, so the bar shows images/s and the epoch's ETA."""
    return bar(loader, f"{role} epoch {epoch + 1}/{epochs}", total=len(loader), unit="img",
               scale=loader.batch_size)  # fmt: skip
