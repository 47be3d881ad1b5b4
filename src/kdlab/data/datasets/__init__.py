"""Dataset registry and the on-disk format every dataset is written in.

Each dataset is one module of this package: its official files (URL + published checksum), the
builder that converts them to `Arrays` (images) or `SequenceArrays` (sequences), and its
`DatasetSpec`, registered with `register_dataset`. Importing this package imports them all
(their heavy libraries only when a builder runs), so `DATASETS` lists every dataset, by name.

A prepared dataset is a directory `data/<name>/`. An image dataset (`kind: image`) holds

    train_images.npy  uint8 (N, H, W, C)      test_images.npy  uint8 (M, H, W, C)
    train_labels.npy  int64 (N,)              test_labels.npy  int64 (M,)
    meta.json         classes, shapes, per-channel mean/std of the train split, sha256 per array

A sequence dataset (`kind: sequence`: variable-length multichannel series, e.g. UEA `.ts`
files or pose keypoints) holds

    train_sequences.npy  float32 (N, T_max, C), zero after each sample's length
    train_lengths.npy    int64 (N,), valid frames of each sample (1..T_max)
    train_labels.npy     int64 (N,)           (and the same three for test, T_max shared)
    meta.json            as above, with `sequence_shape` [T_max, C] and the per-channel
                         mean/std over the valid frames of the train split

The train/test split is fixed by the dataset (or by SPLIT_SEED for datasets that ship without
one), never by the experiment seed, so every experiment is evaluated on the same test set.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kdlab.checksum import json_sha256, sha256_file
from kdlab.data.download import RemoteFile
from kdlab.errors import DataError
from kdlab.fsutil import atomic_directory, temp_directory

DYNAMIC_IMPORTS = ("kdlab.data.datasets",)
"""Packages whose every module this package imports by name (read by kdlab.codedeps)."""

SPLIT_SEED = 20_261_121
"""Seed of the train/test split for datasets without an official one (fixed, not `seed`)."""
SUBSET_SEED = 20_261_122
"""Seed of `data.train_subset`'s draw (fixed, not `seed`: every experiment sees the same images)."""

ARRAY_FILES = ("train_images", "train_labels", "test_images", "test_labels")
SEQUENCE_FILES = ("train_sequences", "train_lengths", "train_labels", "test_sequences",
                  "test_lengths", "test_labels")  # fmt: skip
KINDS = ("image", "sequence")
"""Data kinds; each model family serves one (kdlab.architectures.ArchSpec.kind)."""


def array_files(kind: str) -> tuple[str, ...]:
    """The .npy files (without suffix) of a prepared dataset of `kind`."""
    return SEQUENCE_FILES if kind == "sequence" else ARRAY_FILES


@dataclasses.dataclass(frozen=True)
class Arrays:
    """A dataset in memory, in the on-disk format."""

    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, H, W, C) uint8
    test_labels: np.ndarray  # (M,) int64
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SequenceArrays:
    """A sequence dataset in memory: one (T_i, C) float32 array per sample (time first)."""

    train: list[np.ndarray]
    train_labels: np.ndarray  # (N,) int64
    test: list[np.ndarray]
    test_labels: np.ndarray  # (M,) int64
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Where a builder may put things: scratch (deleted after), downloads (kept for resume)."""

    scratch_dir: Path
    download_dir: Path
    mirror: str = ""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about a dataset before it is prepared."""

    name: str
    image_shape: tuple[int, ...]
    """(H, W, C) of every image; () for a sequence dataset."""
    num_classes: int
    train_size: int
    """Samples in the official training split (data.train_subset is at most this)."""
    build: Callable[[BuildContext], Arrays | SequenceArrays]
    """Builds the arrays (downloading what it needs into the context's directories)."""
    crop_padding: int = 0
    """Default padding of the random crop (data.crop_padding: auto); images only."""
    horizontal_flip: bool = False
    """Default of data.horizontal_flip: auto; False where a mirror image is another class."""
    kind: str = "image"
    """`image` or `sequence` (KINDS): which models and augmentations apply."""
    sequence_shape: tuple[int, ...] = ()
    """(T_max, C) of a sequence dataset: the longest sample of both splits, its channels."""
    classes: tuple[str, ...] = ()
    """The class names as the files write them, when known before preparing (validation of
    analyze.case_studies); () = known only from meta.json."""
    files: tuple[RemoteFile, ...] = ()
    """The official files (URL + published MD5) it is built from; none for embedded data."""
    source: str = ""
    """Where the data comes from, for people."""

    @property
    def input_size(self) -> int | tuple[int, int]:
        """What a model family's shape function is given: the image side, or (T_max, C)."""
        if self.kind == "sequence":
            return (int(self.sequence_shape[0]), int(self.sequence_shape[1]))
        return int(self.image_shape[0])

    @property
    def sample_bytes(self) -> int:
        """Bytes of one prepared training sample (the disk estimate of kdlab.preflight)."""
        if self.kind == "sequence":
            return 4 * int(self.sequence_shape[0]) * int(self.sequence_shape[1]) + 16
        return int(self.image_shape[0]) * int(self.image_shape[1]) * int(self.image_shape[2])


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Called by kdlab/data/datasets/<name>.py: `data.name: <name>` exists."""
    if spec.name in DATASETS:
        raise RuntimeError(f"dataset {spec.name!r} registered twice")
    if spec.kind not in KINDS or (spec.kind == "sequence") != bool(spec.sequence_shape):
        raise RuntimeError(f"dataset {spec.name!r}: kind {spec.kind!r} with sequence_shape "
                           f"{spec.sequence_shape!r}")  # fmt: skip
    DATASETS[spec.name] = spec


def channel_stats(images_nhwc: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, computed in float64 chunks."""
    total = np.zeros(images_nhwc.shape[-1])
    total_sq = np.zeros(images_nhwc.shape[-1])
    for start in range(0, len(images_nhwc), chunk):
        block = images_nhwc[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
    count = images_nhwc.shape[0] * images_nhwc.shape[1] * images_nhwc.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.tolist(), std.tolist()


META_CHECKSUM = "meta_sha256"
"""meta.json's checksum of its own content (without this key), checked by every reader."""


def make_meta(name: str, arrays: Arrays, hashes: dict[str, str], extra: dict) -> dict:
    mean, std = channel_stats(arrays.train_images)
    meta = {
        "name": name,  # no "kind": an image dataset's meta.json stays as it always was
        "classes": list(arrays.classes),
        "num_classes": len(arrays.classes),
        "image_shape": list(arrays.train_images.shape[1:]),  # [H, W, C]
        "splits": {"train": len(arrays.train_labels), "test": len(arrays.test_labels)},
        "mean": mean,
        "std": std,
        "sha256": {f"{key}.npy": hashes[key] for key in ARRAY_FILES},
        **extra,
    }
    meta[META_CHECKSUM] = json_sha256(meta)  # mean/std are used as read: verify them too
    return meta


def check_arrays(arrays: Arrays) -> None:
    """Shapes and dtypes of the on-disk format; a builder bug must never reach disk."""
    for split in ("train", "test"):
        images = getattr(arrays, f"{split}_images")
        labels = getattr(arrays, f"{split}_labels")
        assert images.dtype == np.uint8 and images.ndim == 4, (split, images.dtype, images.shape)
        assert labels.dtype == np.int64 and labels.shape == (len(images),), (split, labels.shape)
        assert labels.min() >= 0 and labels.max() < len(arrays.classes), split


def write_dataset(arrays: Arrays, name: str, out_dir: Path, extra: dict | None = None) -> dict:
    """Write arrays + meta.json into `out_dir` atomically: a temp dir renamed into place.

    `extra` adds keys to meta.json (how the arrays were made, e.g. the training subset)."""
    check_arrays(arrays)
    with atomic_directory(out_dir) as tmp_dir:
        hashes = {}
        for key in ARRAY_FILES:
            np.save(tmp_dir / f"{key}.npy", getattr(arrays, key))
            hashes[key] = sha256_file(tmp_dir / f"{key}.npy")
        meta = make_meta(name, arrays, hashes, extra or {})
        (tmp_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def pad_sequences(series: list[np.ndarray], t_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, t_max, C) float32 zero-padded after each sample's length, and the lengths (N,)."""
    channels = series[0].shape[1]
    padded = np.zeros((len(series), t_max, channels), dtype=np.float32)
    lengths = np.zeros(len(series), dtype=np.int64)
    for i, sample in enumerate(series):
        padded[i, : len(sample)] = sample
        lengths[i] = len(sample)
    return padded, lengths


def sequence_stats(series: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over every valid frame of the samples, in float64."""
    frames = np.concatenate([np.asarray(s, dtype=np.float64) for s in series])  # (sum T, C)
    std = frames.std(axis=0)
    return frames.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()


def check_sequences(arrays: SequenceArrays) -> None:
    """Shapes, dtypes and finiteness of a sequence dataset; a builder bug never reaches disk."""
    channels = arrays.train[0].shape[1] if arrays.train else 0
    for split in ("train", "test"):
        series, labels = getattr(arrays, split), getattr(arrays, f"{split}_labels")
        assert series and labels.dtype == np.int64 and labels.shape == (len(series),), split
        assert labels.min() >= 0 and labels.max() < len(arrays.classes), split
        for sample in series:
            assert sample.ndim == 2 and sample.shape[1] == channels and len(sample) >= 1, split
            if not np.isfinite(sample).all():
                raise DataError(f"a {split} sample holds NaN or infinite values: missing "
                                "values are not supported")  # fmt: skip


def write_sequence_dataset(arrays: SequenceArrays, name: str, out_dir: Path, t_max: int,
                           extra: dict | None = None) -> dict:  # fmt: skip
    """Write a sequence dataset (module docstring) into `out_dir` atomically, padded to
    `t_max` frames (the registered T_max, which the models' shapes were validated against)."""
    check_sequences(arrays)
    longest = max(len(s) for s in (*arrays.train, *arrays.test))
    if longest > t_max:
        raise DataError(f"dataset {name}: a sample has {longest} frames, more than its "
                        f"registered T_max {t_max}")  # fmt: skip
    mean, std = sequence_stats(arrays.train)
    with atomic_directory(out_dir) as tmp_dir:
        hashes = {}
        for split in ("train", "test"):
            padded, lengths = pad_sequences(getattr(arrays, split), t_max)
            for key, value in (("sequences", padded), ("lengths", lengths),
                               ("labels", getattr(arrays, f"{split}_labels"))):  # fmt: skip
                np.save(tmp_dir / f"{split}_{key}.npy", value)
                hashes[f"{split}_{key}.npy"] = sha256_file(tmp_dir / f"{split}_{key}.npy")
        meta = {
            "name": name,
            "kind": "sequence",
            "classes": list(arrays.classes),
            "num_classes": len(arrays.classes),
            "sequence_shape": [t_max, int(arrays.train[0].shape[1])],
            "splits": {"train": len(arrays.train), "test": len(arrays.test)},
            "mean": mean,
            "std": std,
            "sha256": hashes,
            **(extra or {}),
        }
        meta[META_CHECKSUM] = json_sha256(meta)
        (tmp_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def stratified_subset(labels: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of `n` training images drawn per class in proportion (SUBSET_SEED)."""
    from sklearn.model_selection import train_test_split

    if n >= len(labels):
        return np.arange(len(labels))
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels,
                                 random_state=SUBSET_SEED)  # fmt: skip
    return np.sort(chosen)


def take_train_subset(arrays: Arrays | SequenceArrays, n: int) -> Arrays | SequenceArrays:
    """The arrays with the training split cut to a class-stratified subset of `n` (0 = all)."""
    if n == 0:
        return arrays
    if n > len(arrays.train_labels):
        raise DataError(f"data.train_subset {n} is larger than the training split "
                        f"({len(arrays.train_labels)} samples)")  # fmt: skip
    keep = stratified_subset(arrays.train_labels, n)
    if isinstance(arrays, SequenceArrays):
        return dataclasses.replace(arrays, train=[arrays.train[i] for i in keep],
                                   train_labels=arrays.train_labels[keep])  # fmt: skip
    return dataclasses.replace(arrays, train_images=arrays.train_images[keep],
                               train_labels=arrays.train_labels[keep])  # fmt: skip


def prepare_dataset(
    name: str,
    out_dir: Path,
    download_dir: Path | None = None,
    mirror: str = "",
    train_subset: int = 0,
) -> dict:
    """Build dataset `name` and write it to `out_dir`; returns its meta.json content.

    `train_subset` > 0 keeps a class-stratified subset of that many training images, drawn with
    SUBSET_SEED (recorded in meta.json); the test split is always whole.

    Downloads go to `download_dir` (kept, so an interrupted download resumes); archives are
    extracted into a scratch directory next to `out_dir` that is always removed.
    """
    spec = DATASETS[name]
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    download_dir = Path(download_dir) if download_dir else out_dir.parent / ".downloads"
    with temp_directory(out_dir.parent, f"{name}-scratch") as scratch:
        arrays = spec.build(BuildContext(scratch, download_dir, mirror))
    full = len(arrays.train_labels)
    arrays = take_train_subset(arrays, train_subset)
    extra = {"train_subset": train_subset, "train_full": full}
    if isinstance(arrays, SequenceArrays):
        return write_sequence_dataset(arrays, name, out_dir, spec.sequence_shape[0], extra)
    return write_dataset(arrays, name, out_dir, extra)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
_ordered = sorted(DATASETS.items())  # by name, whichever module was imported first
DATASETS.clear()
DATASETS.update(_ordered)
