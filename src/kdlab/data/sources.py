"""The real datasets: official files, published checksums, and converters to kdlab's format.

Every converter reads the official layout (CIFAR's pickled python batches in a tar.gz, SVHN's
MATLAB files, TinyImageNet's zip with wnids.txt and val_annotations.txt, Fashion-MNIST's gzipped
IDX files) from files verified by `download.fetch`, extracted into the prepare stage's scratch
directory. Fashion-MNIST is read from Debian's `dataset-fashion-mnist` package when installed.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from kdlab.data.download import RemoteFile, fetch
from kdlab.errors import DataError

CIFAR10 = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a")  # fmt: skip
CIFAR100 = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "eb9058c3a382ffc7106e4002c42a8d85")  # fmt: skip
SVHN_TRAIN = RemoteFile("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                        "e26dedcc434d2e4c54c9b2d4a06d8373")  # fmt: skip
SVHN_TEST = RemoteFile("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                       "eb5a983be6a315427106f1b164d9cef3")  # fmt: skip
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
TINYIMAGENET = RemoteFile("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                          "90528d7ca1a48142e341f4ef8d21d0de")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Where a builder may put things: scratch (deleted after), downloads (kept for resume)."""

    scratch_dir: Path
    download_dir: Path
    mirror: str = ""


def _safe_extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths, '..', devices, links out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(
            f"{archive.name} cannot be extracted ({exc}); delete it and re-run"
        ) from None


def _safe_extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DataError(f"{archive.name} holds an unsafe path {name!r}")
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{archive.name} cannot be extracted ({exc}); delete it and re-run"
        ) from None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # the official batches are Python 2 pickles


def _cifar_images(batch: dict) -> np.ndarray:
    """(N, 3072) rows of R, G, B planes -> (N, 32, 32, 3) uint8."""
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _build_cifar(ctx: BuildContext, remote: RemoteFile, folder: str, train_files, test_file,
                 label_key: str, meta_file: str, names_key: str):  # fmt: skip
    from kdlab.data.datasets import Arrays

    archive = fetch(remote, ctx.download_dir, ctx.mirror)
    _safe_extract_tar(archive, ctx.scratch_dir)
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


def build_cifar10(ctx: BuildContext):
    """CIFAR-10: 50,000 train / 10,000 test 32×32 RGB images, 10 classes (Krizhevsky 2009)."""
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _build_cifar(ctx, CIFAR10, "cifar-10-batches-py", train, "test_batch", "labels",
                        "batches.meta", "label_names")  # fmt: skip


def build_cifar100(ctx: BuildContext):
    """CIFAR-100: 50,000 train / 10,000 test 32×32 RGB images, 100 fine classes."""
    return _build_cifar(ctx, CIFAR100, "cifar-100-python", ["train"], "test", "fine_labels",
                        "meta", "fine_label_names")  # fmt: skip


def _load_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise DataError(f"{path.name} is not a readable MATLAB file ({exc})") from None
    images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # the digit 0 is stored as 10
    return images, labels


def build_svhn(ctx: BuildContext):
    """SVHN cropped digits (Netzer et al. 2011): 73,257 train / 26,032 test 32×32 RGB."""
    from kdlab.data.datasets import Arrays

    train_x, train_y = _load_svhn(fetch(SVHN_TRAIN, ctx.download_dir, ctx.mirror))
    test_x, test_y = _load_svhn(fetch(SVHN_TEST, ctx.download_dir, ctx.mirror))
    return Arrays(train_x, train_y, test_x, test_y, tuple(str(i) for i in range(10)))


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # a few are greyscale


def build_tinyimagenet(ctx: BuildContext):
    """TinyImageNet-200: 100,000 train / 10,000 official-val (used as test) 64×64 RGB images."""
    from tqdm import tqdm

    from kdlab.data.datasets import Arrays

    archive = fetch(TINYIMAGENET, ctx.download_dir, ctx.mirror)
    _safe_extract_zip(archive, ctx.scratch_dir)
    root = ctx.scratch_dir / "tiny-imagenet-200"
    wnids = sorted((root / "wnids.txt").read_text().split())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    words = {}
    if (root / "words.txt").exists():
        for line in (root / "words.txt").read_text().splitlines():
            wnid, _, name = line.partition("\t")
            words[wnid] = name.split(",")[0].strip()
    train = [(path, index[wnid]) for wnid in wnids
             for path in sorted((root / "train" / wnid / "images").glob("*.JPEG"))]  # fmt: skip
    val = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        filename, wnid, *_ = line.split("\t")
        val.append((root / "val" / "images" / filename, index[wnid]))
    val.sort()

    def load(items, desc):
        images = np.stack([_read_rgb(p) for p, _ in tqdm(items, desc=desc, disable=None)])
        return images, np.asarray([label for _, label in items], dtype=np.int64)

    train_x, train_y = load(train, "decode train")
    test_x, test_y = load(val, "decode val")
    return Arrays(train_x, train_y, test_x, test_y, tuple(words.get(w, w) for w in wnids))


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


def build_fashion_mnist(ctx: BuildContext):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28×28 greyscale, 10 classes."""
    from kdlab.data.datasets import Arrays

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
