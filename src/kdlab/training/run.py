"""Train one role (teacher or student) end to end: set-up, resume, per-epoch outputs, final model.

Outputs of a role:
    <model_dir>/model.pt                    final state_dict + arch + params + epoch + metrics
    <model_dir>/milestones/epoch_XXXX.pt    the same, after each epoch in `save_epochs`
    <metrics_dir>/                          DVCLive: metrics.json and per-epoch plot data
    <resume_path>                           the last complete epoch, to resume a killed run

The resume checkpoint carries a fingerprint of everything that determines the run (params,
dataset and teacher checksums, code, device type). A checkpoint with another fingerprint is
never resumed from: it is logged and the run starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from kdlab.config import Params, TrainConfig
from kdlab.data.datasets import sha256_file
from kdlab.data.loader import BatchLoader, Dataset
from kdlab.distill import Distiller, PairInfo, make_distiller
from kdlab.errors import CheckpointError, ConfigError
from kdlab.models import FeatureModel, make_model
from kdlab.training.checkpoint import (
    MODEL_FORMAT,
    RESUME_FORMAT,
    load_checkpoint,
    save_checkpoint,
)
from kdlab.training.loop import (
    Objective,
    TrainState,
    make_optimizer,
    make_scheduler,
    pretrain_epochs,
    run_epochs,
)

log = logging.getLogger(__name__)
SOURCE_DIR = Path(__file__).resolve().parents[1]


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


def source_digest() -> str:
    """sha256 over kdlab's Python sources: a code change invalidates resume checkpoints."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        digest.update(path.relative_to(SOURCE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def role_params(role: str, params: Params) -> dict[str, Any]:
    """The params sections that determine a role's training (checkpoint metadata, fingerprint)."""
    sections = {"seed": params.seed, "data": params.section("data"), role: params.section(role)}
    if role == "student":
        sections["kd"] = params.section("kd")
    return sections


def run_fingerprint(
    role: str,
    params: Params,
    dataset: Dataset,
    device: torch.device,
    teacher_sha: str | None,
    artifacts: dict[str, Path] | None = None,
) -> str:
    identity = {
        "role": role,
        "params": role_params(role, params),
        "dataset_sha256": dataset.meta["sha256"],
        "teacher_sha256": teacher_sha,
        "artifacts_sha256": {k: sha256_file(Path(v)) for k, v in sorted((artifacts or {}).items())},
        "code": source_digest(),
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_model(path: Path, device: torch.device) -> tuple[FeatureModel, dict[str, Any]]:
    """Rebuild a model from a kdlab model checkpoint; returns (model in eval mode, payload)."""
    payload = load_checkpoint(path, MODEL_FORMAT)
    model = make_model(payload["arch"], payload["in_channels"], payload["num_classes"],
                       payload.get("image_size", 32))  # fmt: skip
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit arch {payload['arch']}: {exc}"
        ) from None
    return model.to(device).eval(), payload


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
        "in_channels": dataset.in_channels,
        "num_classes": dataset.num_classes,
        "image_size": dataset.image_size,
        "state_dict": state.model.state_dict(),
        "distiller_state_dict": state.distiller.state_dict(),
        "params": role_params(role, params),
        "epoch": state.epoch,
        "metrics": dict(state.history[-1]) if state.history else {},
    }


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


def try_resume(state: TrainState, resume_path: Path, fingerprint: str) -> None:
    """Restore `state` from `resume_path` if it exists and belongs to this exact run."""
    if not resume_path.exists():
        return
    try:
        payload = load_checkpoint(resume_path, RESUME_FORMAT)
    except CheckpointError as exc:
        log.warning("not resuming: %s; starting fresh", exc)
        return
    if payload["fingerprint"] != fingerprint:
        log.warning(
            "not resuming from %s: it was written by a run with other params, data, teacher or "
            "code; starting fresh",
            resume_path,
        )
        return
    state.model.load_state_dict(payload["model"])
    state.distiller.load_state_dict(payload["distiller"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    state.epoch = int(payload["epoch"])
    state.history = list(payload["history"])
    log.info(
        "resuming from %s at epoch %d (%d epochs already complete)",
        resume_path,
        state.epoch,
        state.epoch,
    )


class MetricsLogger:
    """DVCLive per epoch; after a resume the saved history is replayed, so files are identical."""

    def __init__(self, metrics_dir: Path) -> None:
        from dvclive import Live

        # dvcyaml=None: metrics and plots are declared in dvc.yaml by hand, never rewritten.
        self.live = Live(dir=str(metrics_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log_epoch(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


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
    )
    test = BatchLoader(dataset.test.to(device), cfg.eval_batch_size, mean, std, train=False)
    return train, test


def train_role(
    role: str,
    params: Params,
    dataset: Dataset,
    device: torch.device,
    outputs: RoleOutputs,
    teacher_path: Path | None = None,
    artifacts: dict[str, Path] | None = None,
) -> dict[str, float]:
    """Train the teacher or the student described by `params`; returns its final metrics.

    `artifacts` are files made by earlier stages for the KD method (ft's paraphraser).
    """
    cfg: TrainConfig = getattr(params, role)
    model = make_model(cfg.arch, dataset.in_channels, dataset.num_classes, dataset.image_size)
    method = "none" if role == "teacher" else params.kd.method
    teacher, teacher_sha, pair = None, None, None
    if method != "none":
        if teacher_path is None:
            raise ConfigError(f"kd.method {method} needs a teacher checkpoint")
        teacher, teacher_sha = load_frozen_teacher(teacher_path, device)
        pair = PairInfo.probe(model, teacher, dataset.meta["image_shape"], artifacts)
    if role == "teacher":
        distiller = make_distiller("none")
        objective = Objective(alpha=0.0, label_smoothing=cfg.label_smoothing)
    else:
        distiller = make_distiller(method, params.kd.method_params, pair)
        objective = Objective(params.kd.alpha, params.student_label_smoothing, teacher)

    state = build_state(model, distiller, cfg, device)
    fingerprint = run_fingerprint(role, params, dataset, device, teacher_sha, artifacts)
    try_resume(state, outputs.resume_path, fingerprint)
    train_loader, test_loader = make_loaders(cfg, params, dataset, device)

    metrics = MetricsLogger(outputs.metrics_dir)
    for past in state.history:
        metrics.log_epoch(past)

    def on_epoch_end(state: TrainState) -> None:
        save_checkpoint(resume_payload(state, fingerprint), outputs.resume_path)
        if state.epoch in cfg.save_epochs:
            payload = model_payload(role, state, cfg, params, dataset)
            save_checkpoint(payload, outputs.milestone_path(state.epoch))
        metrics.log_epoch(state.history[-1])
        last = state.history[-1]
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.4g",
            role, state.epoch, cfg.epochs, last["train/loss"], last["train/acc"],
            last["test/loss"], last["test/acc"], last["lr"],
        )  # fmt: skip

    def progress(epochs: range):
        # A bar on a terminal; under DVC's log capture or SLURM the per-epoch log lines remain.
        return tqdm(epochs, desc=f"train {role}", initial=state.epoch, total=cfg.epochs,
                    file=sys.stderr, unit="epoch", dynamic_ncols=True,
                    disable=None)  # fmt: skip

    log.info(
        "training %s %s on %s (%d train / %d test images) on %s, kd.method=%s",
        role, cfg.arch, dataset.meta["name"], len(dataset.train), len(dataset.test), device,
        params.kd.method if role == "student" else "none",
    )  # fmt: skip
    if state.epoch == 0 and distiller.pretrain_epochs() > 0:
        # Deterministic from the seed, so a run killed during it simply redoes it.
        log.info("pre-training the student for %d epochs (%s)", distiller.pretrain_epochs(), method)
        pretrain_epochs(state, objective, train_loader, device)
    compile = cfg.use_compile(device.type)
    if compile:
        log.info("compiling the training step and evaluation (%s.compile)", role)
    run_epochs(
        state, objective, train_loader, test_loader, cfg.epochs, device, on_epoch_end, progress,
        compile=compile,
    )  # fmt: skip
    metrics.close()
    save_checkpoint(model_payload(role, state, cfg, params, dataset), outputs.model_path)
    log.info("wrote %s (test acc %.4f)", outputs.model_path, state.history[-1]["test/acc"])
    return state.history[-1]
