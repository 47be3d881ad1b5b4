"""The reference loop: training written the plain way, as most KD repositories do it.

A torch DataLoader over the dataset with per-sample torchvision transforms (random crop, flip,
to-float, normalise), float32, the teacher under `no_grad`, and `.item()` after every step.
It is what `kdlab bench` measures kdlab's loop against, and what the accuracy-parity test trains
beside the pipeline's loop. It shares the models, the KD losses, the optimizer settings and the
schedule with kdlab, so only the loop differs; its optimizer is
`make_optimizer(..., fast=False)` (torch's default SGD implementation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from kdlab.config import TrainConfig
from kdlab.data.loader import Batch, Split
from kdlab.distill.base import Distiller, student_loss
from kdlab.models import FeatureModel
from kdlab.training.loop import make_scheduler


class PerSampleDataset(torch.utils.data.Dataset):
    """One (image, label, index) at a time from HWC uint8 arrays, through a torchvision
    transform (the index as RepDistiller's CIFAR100Instance gives it, for CRD's memory)."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, transform: v2.Transform):
        self.images_nhwc = images_nhwc
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.images_nhwc[index]), int(self.labels[index]), index


def make_transform(
    mean: list[float], std: list[float], image_size: int, crop_padding: int, flip: bool
) -> v2.Compose:
    """The usual CIFAR pipeline: RandomCrop(padding) + RandomHorizontalFlip + Normalize."""
    ops: list[v2.Transform] = [v2.ToImage()]
    if crop_padding:
        ops.append(v2.RandomCrop(image_size, padding=crop_padding))
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


@dataclasses.dataclass(frozen=True)
class ReferenceData:
    """How the reference loop reads a split: batch size, augmentation, workers."""

    mean: list[float]
    std: list[float]
    crop_padding: int = 0
    horizontal_flip: bool = False
    workers: int = 0
    pin_memory: bool = False


def make_reference_loader(
    split: Split, batch_size: int, data: ReferenceData, *, train: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader over `split` (moved back to host NHWC numpy, as a dataset on disk would be)."""
    images_nhwc = split.images.permute(0, 2, 3, 1).cpu().numpy()
    image_size = images_nhwc.shape[1]
    transform = make_transform(
        data.mean, data.std, image_size,
        data.crop_padding if train else 0, data.horizontal_flip and train,
    )  # fmt: skip
    dataset = PerSampleDataset(images_nhwc, split.labels.cpu().numpy(), transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) >= batch_size,
        num_workers=data.workers,
        pin_memory=data.pin_memory,
        persistent_workers=data.workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


@dataclasses.dataclass
class ReferenceRun:
    """A student (or teacher), its KD method and frozen teacher, and its optimizer."""

    model: FeatureModel
    distiller: Distiller
    optimizer: torch.optim.Optimizer
    alpha: float = 0.0
    label_smoothing: float = 0.0
    teacher: FeatureModel | None = None


def reference_train_epoch(
    run: ReferenceRun, loader: DataLoader, device: torch.device, max_steps: int | None = None
) -> dict[str, float]:
    """One epoch the plain way: per-step host sync through `.item()`; fp32 throughout."""
    run.model.train()
    run.distiller.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (images, labels, indices) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images, labels, indices = images.to(device), labels.to(device), indices.to(device)
        student = run.model.forward_features(images)
        teacher = None
        if run.distiller.needs_teacher:
            with torch.no_grad():
                teacher = run.teacher.forward_features(images)
        batch = Batch(images, labels, indices)
        terms = student_loss(run.distiller, run.alpha, student, teacher, batch,
                             run.label_smoothing)  # fmt: skip
        run.optimizer.zero_grad()
        terms.total.backward()
        run.optimizer.step()
        loss_sum += terms.total.item() * labels.shape[0]
        correct += (student.logits.argmax(1) == labels).sum().item()
        seen += labels.shape[0]
    return {"loss": loss_sum / seen, "acc": correct / seen}


def reference_evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict:
    """Accuracy and cross-entropy under `no_grad`, read back batch by batch."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels, _indices in loader:  # a torch DataLoader's batches
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.shape[0]
    return {"loss": loss_sum / seen, "acc": correct / seen}


def reference_fit(
    run: ReferenceRun,
    cfg: TrainConfig,
    train_loader: DataLoader,
    test_loader: DataLoader,
    device: torch.device,
) -> list[dict[str, float]]:
    """`cfg.epochs` epochs with kdlab's schedule; the per-epoch train and test metrics."""
    scheduler = make_scheduler(run.optimizer, cfg)
    history = []
    for _ in range(cfg.epochs):
        train = reference_train_epoch(run, train_loader, device)
        scheduler.step()
        test = reference_evaluate(run.model, test_loader, device)
        history.append({**{f"train/{k}": v for k, v in train.items()},
                        **{f"test/{k}": v for k, v in test.items()}})  # fmt: skip
    return history
