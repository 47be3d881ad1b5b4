"""Reading a prepared dataset and batching it from memory, augmentation included.

The whole split lives in one uint8 tensor on the training device. Batches are index slices of
an epoch permutation; random crops and flips are applied to the whole batch on its device. All
randomness of an epoch is drawn up front from a `torch.Generator` seeded by (seed, epoch), so an
epoch's batches depend on nothing but the seed and the epoch number: a resumed run sees exactly
the batches an uninterrupted one would, and there is no per-sample Python on the hot path.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kdlab.checksum import json_sha256, sha256_file
from kdlab.data.datasets import ARRAY_FILES, META_CHECKSUM
from kdlab.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset as tensors (on CPU until moved)."""

    images: torch.Tensor  # (N, C, H, W) uint8, channels_last memory format
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclasses.dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    meta: dict

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_shape"][0])

    @property
    def in_channels(self) -> int:
        return int(self.meta["image_shape"][2])


def load_meta(data_dir: Path) -> dict:
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.exists():
        raise DataError(
            f"{data_dir} is not a prepared dataset (no meta.json): run `dvc repro prepare`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{meta_path} is corrupt (not JSON): run `dvc repro prepare`") from None
    content = {k: v for k, v in meta.items() if k != META_CHECKSUM}
    if meta.get(META_CHECKSUM) != json_sha256(content):
        raise DataError(
            f"{meta_path} does not match its checksum (corrupt, or written by an older kdlab): "
            "run `dvc repro -f prepare` (or `dvc checkout`)"
        )
    return meta


def verify_dataset(data_dir: Path, meta: dict) -> None:
    """Every array must match the sha256 recorded in meta.json: a corrupt file is never used."""
    for key in ARRAY_FILES:
        path = Path(data_dir) / f"{key}.npy"
        if not path.exists():
            raise DataError(f"{path} is missing: run `dvc repro prepare` (or `dvc pull`)")
        expected = meta["sha256"][f"{key}.npy"]
        if sha256_file(path) != expected:
            raise DataError(f"{path} does not match its sha256 in meta.json: the file is corrupt")


def load_dataset(data_dir: str | Path, verify: bool = True) -> Dataset:
    """Load a prepared dataset from `data_dir`, checking its checksums first."""
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    if verify:
        verify_dataset(data_dir, meta)

    def split(name: str) -> Split:
        images_nhwc = torch.from_numpy(np.load(data_dir / f"{name}_images.npy"))
        labels = torch.from_numpy(np.load(data_dir / f"{name}_labels.npy"))
        # NHWC storage viewed as NCHW = a channels_last tensor, without a copy.
        return Split(images_nhwc.permute(0, 3, 1, 2), labels)

    return Dataset(train=split("train"), test=split("test"), meta=meta)


class Stream(enum.IntEnum):
    """The independent random streams of a run: each epoch of each is its own generator."""

    TRAIN = 0
    """The main training epochs' order and augmentation."""
    PRETRAIN = 1
    """A KD method's pre-training of the student (FitNets' hint stage)."""
    PARAPHRASER = 2
    """Factor Transfer's paraphraser training."""
    KD_METHOD = 3
    """A KD method's own draws during training (CRD's negatives)."""


def epoch_generator(seed: int, epoch: int, stream: Stream = Stream.TRAIN) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch, stream)."""
    state = np.random.SeedSequence([seed, epoch, int(stream)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def random_crop(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Per-sample crops of zero-padded images; `offsets` (B, 2) holds each top-left in [0, 2p]."""
    if padding == 0:
        return images
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0:1] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(width, device=images.device)  # (B, W)
    batch_idx = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 with a slice on dim 1 yields (B, H, W, C).
    cropped = padded[batch_idx, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2)


class Batch(NamedTuple):
    """One batch: images float32 (B, C, H, W), normalised, channels_last; labels (B,); and
    indices (B,), each sample's position in its split (for methods with per-sample state)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


class BatchLoader:
    """Batches of a device-resident split: shuffled and augmented (train) or in order (eval).

    Yields `Batch`es, images normalised with the dataset's train mean/std.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: list[float],
        std: list[float],
        *,
        train: bool,
        seed: int = 0,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding if train else 0
        self.horizontal_flip = horizontal_flip and train
        device = split.images.device
        # Fused normalisation: x_norm = x_uint8 * scale + shift.
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.epoch = 0
        self.stream = Stream.TRAIN

    def set_epoch(self, epoch: int, stream: Stream = Stream.TRAIN) -> None:
        """Select the epoch (and random stream) the next iteration uses."""
        self.epoch = epoch
        self.stream = stream

    def __len__(self) -> int:
        n = len(self.split)
        if self.train:
            return max(n // self.batch_size, 1)
        return -(-n // self.batch_size)

    def epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This epoch's order (N,), crop offsets (N, 2) and flip mask (N,), drawn at once."""
        n = len(self.split)
        gen = epoch_generator(self.seed, self.epoch, self.stream)
        order = torch.randperm(n, generator=gen)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        device = self.split.images.device
        return order.to(device), offsets.to(device), flips.to(device)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        if self.train:
            order, offsets, flips = self.epoch_plan()
            # Drop the last incomplete batch (unless the split is smaller than one batch).
            stop = max(n - n % self.batch_size, min(n, self.batch_size))
        else:
            order = offsets = flips = None
            stop = n
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, stop)
            if order is None:
                idx = torch.arange(start, end, device=self.split.labels.device)
                images = self.split.images[start:end]
                labels = self.split.labels[start:end]
            else:
                idx = order[start:end]
                images = self.split.images[idx]
                labels = self.split.labels[idx]
                images = random_crop(images, self.crop_padding, offsets[idx])
                if self.horizontal_flip:
                    images = torch.where(flips[idx].view(-1, 1, 1, 1), images.flip(3), images)
            images = images.float().mul_(self.scale).add_(self.shift)
            yield Batch(images.contiguous(memory_format=torch.channels_last), labels, idx)
