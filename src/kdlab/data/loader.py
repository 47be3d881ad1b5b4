"""Reading a prepared dataset and batching it from memory, augmentation included.

The whole split lives in one uint8 tensor on the training device. Batches are index slices of
an epoch permutation; random crops and flips are applied to the whole batch on its device. All
randomness of an epoch is drawn up front from a `torch.Generator` seeded by (seed, epoch), so an
epoch's batches depend on nothing but the seed and the epoch number: a resumed run sees exactly
the batches an uninterrupted one would, and there is no per-sample Python on the hot path.

A sequence dataset (kdlab.data.datasets, `kind: sequence`) is held the same way, as float32
(N, T_max, C) plus lengths; every batch carries a key-padding `mask` (B, T_max), True at padded
frames, which every model, extraction and measure honours. Its augmentations (a random time
crop, per-sample amplitude scaling, additive jitter) are drawn per epoch from the same seeded
generators; padded frames are always exactly 0 after normalisation.
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
from kdlab.data.datasets import META_CHECKSUM, array_files
from kdlab.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset as tensors (on CPU until moved)."""

    images: torch.Tensor  # (N, C, H, W) uint8, channels_last; sequences: (N, T_max, C) float32
    labels: torch.Tensor  # (N,) int64
    lengths: torch.Tensor | None = None
    """(N,) int64 valid frames of each sequence; None for images."""

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Split(self.images.to(device), self.labels.to(device), lengths)

    def take(self, idx: torch.Tensor) -> Split:
        """The samples at `idx` (a tensor of indices), in that order."""
        lengths = None if self.lengths is None else self.lengths[idx]
        return Split(self.images[idx], self.labels[idx], lengths)


@dataclasses.dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    meta: dict

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def kind(self) -> str:
        """`image` or `sequence` (an image dataset's meta.json has no kind)."""
        return self.meta.get("kind", "image")

    @property
    def image_size(self) -> int:
        """The image side; for a sequence dataset its T_max (what a model is built for)."""
        if self.kind == "sequence":
            return int(self.meta["sequence_shape"][0])
        return int(self.meta["image_shape"][0])

    @property
    def in_channels(self) -> int:
        """Image channels, or the channels of each frame of a sequence."""
        if self.kind == "sequence":
            return int(self.meta["sequence_shape"][1])
        return int(self.meta["image_shape"][2])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(H, W, C) of an image, (T_max, C) of a sequence (kdlab.distill.spec.PairInfo.probe)."""
        if self.kind == "sequence":
            return tuple(int(v) for v in self.meta["sequence_shape"])
        return tuple(int(v) for v in self.meta["image_shape"])


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
    for key in array_files(meta.get("kind", "image")):
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
        labels = torch.from_numpy(np.load(data_dir / f"{name}_labels.npy"))
        if meta.get("kind") == "sequence":
            sequences = torch.from_numpy(np.load(data_dir / f"{name}_sequences.npy"))
            return Split(
                sequences, labels, torch.from_numpy(np.load(data_dir / f"{name}_lengths.npy"))
            )
        images_nhwc = torch.from_numpy(np.load(data_dir / f"{name}_images.npy"))
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


def batch_generator(seed: int, epoch: int, stream: Stream, batch: int) -> torch.Generator:
    """A CPU generator for one batch's own draws (a sequence's jitter): (seed, epoch, stream,
    batch number) alone fix its state, so no draw depends on another batch's."""
    state = np.random.SeedSequence([seed, epoch, int(stream), batch + 1]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, t) bool, True at padded frames (nn.MultiheadAttention's key_padding_mask)."""
    return torch.arange(t, device=lengths.device)[None, :] >= lengths[:, None]


def time_crop(sequences: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor,
              where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-sample random windows moved to frame 0: `keep` (B,) the fraction of frames kept,
    `where` (B,) in [0, 1) the window's start among the possible ones."""
    new_lengths = torch.clamp(torch.round(keep * lengths).long(), min=1)
    new_lengths = torch.minimum(new_lengths, lengths)
    starts = torch.floor(where * (lengths - new_lengths + 1)).long()
    frames = torch.arange(sequences.shape[1], device=sequences.device)
    source = torch.where(frames[None, :] < new_lengths[:, None], starts[:, None] + frames, 0)
    gathered = sequences.gather(1, source[..., None].expand(-1, -1, sequences.shape[2]))
    return gathered, new_lengths


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
    """One batch: images float32 (B, C, H, W), normalised, channels_last (sequences: (B, T, C),
    normalised, 0 at padded frames); labels (B,); indices (B,), each sample's position in its
    split (for methods with per-sample state); mask (B, T) True at padded frames, None for
    images."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor | None = None


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
        time_crop: float = 1.0,
        scaling: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding if train else 0
        self.horizontal_flip = horizontal_flip and train
        self.sequences = split.lengths is not None
        self.time_crop = time_crop if train else 1.0
        self.scaling = scaling if train else 0.0
        self.jitter = jitter if train else 0.0
        device = split.images.device
        # Fused normalisation: x_norm = x * scale + shift (x_uint8 / 255 for images).
        view = (1, 1, -1) if self.sequences else (1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(view)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(view)
        self.scale = 1.0 / ((1.0 if self.sequences else 255.0) * std_t)
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

    def sequence_plan(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This epoch's order (N,), time-crop keep fractions and window starts (N,) and
        amplitude factors (N,) of a sequence dataset, drawn at once."""
        n = len(self.split)
        gen = epoch_generator(self.seed, self.epoch, self.stream)
        order = torch.randperm(n, generator=gen)
        keep = self.time_crop + (1.0 - self.time_crop) * torch.rand(n, generator=gen)
        where = torch.rand(n, generator=gen)
        factors = 1.0 + self.scaling * torch.randn(n, generator=gen)
        device = self.split.images.device
        return order.to(device), keep.to(device), where.to(device), factors.to(device)

    def __iter__(self) -> Iterator[Batch]:
        if self.sequences:
            yield from self._sequence_batches()
            return
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

    def _sequence_batches(self) -> Iterator[Batch]:
        n = len(self.split)
        split = self.split
        if self.train:
            order, keep, where, factors = self.sequence_plan()
            stop = max(n - n % self.batch_size, min(n, self.batch_size))
        else:
            order = None
            stop = n
        for number, start in enumerate(range(0, stop, self.batch_size)):
            end = min(start + self.batch_size, stop)
            if order is None:
                idx = torch.arange(start, end, device=split.labels.device)
            else:
                idx = order[start:end]
            x, labels, lengths = split.images[idx], split.labels[idx], split.lengths[idx]
            if order is not None and self.time_crop < 1.0:
                x, lengths = time_crop(x, lengths, keep[idx], where[idx])
            if order is not None and self.scaling > 0:
                x = x * factors[idx].view(-1, 1, 1)
            x = x * self.scale + self.shift
            if order is not None and self.jitter > 0:
                gen = batch_generator(self.seed, self.epoch, self.stream, number)
                x = x + self.jitter * torch.randn(x.shape, generator=gen).to(x.device)
            mask = padding_mask(lengths, x.shape[1])
            yield Batch(x.masked_fill(mask[..., None], 0.0), labels, idx, mask)
