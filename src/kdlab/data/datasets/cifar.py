"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official python-pickle archives."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kdlab.data.archives import safe_extract_tar
from kdlab.data.datasets import Arrays, BuildContext, DatasetSpec, register_dataset
from kdlab.data.download import RemoteFile, fetch

CIFAR10 = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a")  # fmt: skip
CIFAR100 = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "eb9058c3a382ffc7106e4002c42a8d85")  # fmt: skip


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # the official batches are Python 2 pickles


def _cifar_images(batch: dict) -> np.ndarray:
    """(N, 3072) rows of R, G, B planes -> (N, 32, 32, 3) uint8."""
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _build_cifar(ctx: BuildContext, remote: RemoteFile, folder: str, train_files, test_file,
                 label_key: str, meta_file: str, names_key: str) -> Arrays:  # fmt: skip
    archive = fetch(remote, ctx.download_dir, ctx.mirror)
    safe_extract_tar(archive, ctx.scratch_dir)
    root = ctx.scratch_dir / folder

    def load(files):
        batches = [_unpickle(root / f) for f in files]
        images = np.concatenate([_cifar_images(b) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return images, labels

    train_x, train_y = load(train_files)
    test_x, test_y = load([test_file])
    classes = tuple(_unpickle(root / meta_file)[names_key])
    return Arrays(train_x, train_y, test_x, test_y, classes)


def build_cifar10(ctx: BuildContext) -> Arrays:
    """CIFAR-10: 50,000 train / 10,000 test 32×32 RGB images, 10 classes (Krizhevsky 2009)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _build_cifar(ctx, CIFAR10, "cifar-10-batches-py", train, "test_batch", "labels",
                        "batches.meta", "label_names")  # fmt: skip


def build_cifar100(ctx: BuildContext) -> Arrays:
    """CIFAR-100: 50,000 train / 10,000 test 32×32 RGB images, 100 fine classes."""
    return _build_cifar(ctx, CIFAR100, "cifar-100-python", ["train"], "test", "fine_labels",
                        "meta", "fine_label_names")  # fmt: skip


SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
register_dataset(
    DatasetSpec(
        "cifar10",
        image_shape=(32, 32, 3),
        num_classes=10,
        train_size=50_000,
        build=build_cifar10,
        crop_padding=4,
        horizontal_flip=True,
        files=(CIFAR10,),
        source=SOURCE,
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        image_shape=(32, 32, 3),
        num_classes=100,
        train_size=50_000,
        build=build_cifar100,
        crop_padding=4,
        horizontal_flip=True,
        files=(CIFAR100,),
        source=SOURCE,
    )
)
