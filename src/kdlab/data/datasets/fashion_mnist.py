"""Fashion-MNIST (Xiao et al. 2017) from the official gzipped IDX files, or Debian's
`dataset-fashion-mnist` package when installed."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from kdlab.data.datasets import Arrays, BuildContext, DatasetSpec, register_dataset
from kdlab.data.download import RemoteFile, fetch
from kdlab.errors import DataError

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Debian's `dataset-fashion-mnist` (the four official files, recompressed)."""
FASHION_MNIST = {
    # split: (the official file with its published .gz MD5 (torchvision's), MD5 of the IDX inside)
    split: (RemoteFile(FASHION_MNIST_URL + filename, gz_md5), content_md5)
    for split, filename, gz_md5, content_md5 in (
        ("train_images", "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train_labels", "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
         "9018921c3c673c538a1fc5bad174d6f9"),
        ("test_images", "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
         "8181f5470baa50b63fa0f6fddb340f0a"),
        ("test_labels", "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
         "15d484375f8d13e6eb1aabb0c3f46965"),
    )
}  # fmt: skip
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
IDX_MAGIC = {2049: 1, 2051: 3}
"""IDX magic number (unsigned byte data) -> number of dimensions: labels 1, images 3."""


def read_idx(raw: bytes, name: str, expected_md5: str) -> np.ndarray:
    """Decompressed IDX bytes -> array, after checking the content's MD5, magic and shape."""
    if hashlib.md5(raw, usedforsecurity=False).hexdigest() != expected_md5:
        raise DataError(f"{name}: the decompressed IDX content does not match its MD5 "
                        f"{expected_md5}; the file is corrupt or not Fashion-MNIST")  # fmt: skip
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic not in IDX_MAGIC:
        raise DataError(f"{name}: not an IDX file of unsigned bytes (magic {magic})")
    ndim = IDX_MAGIC[magic]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{name}: {len(body)} bytes of data for shape {shape}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _fashion_mnist_file(ctx: BuildContext, remote: RemoteFile) -> Path:
    """Debian's copy when installed (its .gz differs, its content must not), else download."""
    packaged = FASHION_MNIST_DEBIAN_DIR / remote.filename
    if packaged.is_file():
        return packaged
    return fetch(remote, ctx.download_dir, ctx.mirror)


def build_fashion_mnist(ctx: BuildContext) -> Arrays:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28×28 greyscale, 10 classes."""
    arrays = {}
    for split, (remote, content_md5) in FASHION_MNIST.items():
        path = _fashion_mnist_file(ctx, remote)
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable gzip file ({exc})") from None
        arrays[split] = read_idx(raw, str(path), content_md5)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split}: images {images.shape}, labels {labels.shape}")
    return Arrays(arrays["train_images"][..., None].copy(), arrays["train_labels"].astype(np.int64),
                  arrays["test_images"][..., None].copy(), arrays["test_labels"].astype(np.int64),
                  FASHION_MNIST_CLASSES)  # fmt: skip


register_dataset(
    DatasetSpec(
        "fashion_mnist",
        image_shape=(28, 28, 1),
        num_classes=10,
        train_size=60_000,
        build=build_fashion_mnist,
        crop_padding=4,
        horizontal_flip=True,
        files=tuple(remote for remote, _ in FASHION_MNIST.values()),
        source="https://github.com/zalandoresearch/fashion-mnist (Debian: dataset-fashion-mnist)",
    )
)
