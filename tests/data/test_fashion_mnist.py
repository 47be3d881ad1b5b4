"""Fashion-MNIST from Debian's package and from official-format files over HTTP; a corrupt file
is refused in one line; `data.train_subset` is stratified, seed-independent and stable."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kdlab.data.datasets import fashion_mnist, prepare_dataset
from kdlab.data.download import RemoteFile
from kdlab.data.loader import load_dataset
from kdlab.errors import ConfigError, DataError
from kdlab.validate import check_file

from ..conftest import tiny_params, write_params
from ..services import unavailable
from .test_sources import md5, server  # noqa: F401 (the local HTTP server fixture)

DEBIAN = fashion_mnist.FASHION_MNIST_DEBIAN_DIR


def idx(array: np.ndarray) -> bytes:
    """The IDX format of unsigned bytes: magic (2049 labels, 2051 images), dims, data."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_official(root: Path, monkeypatch, n_train: int = 60, n_test: int = 20) -> dict:
    """Small files in the official format on the mirror, published as the official ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": np.arange(n_test) % 10,
    }
    published = {}
    for split, (remote, _) in fashion_mnist.FASHION_MNIST.items():
        raw = idx(arrays[split])
        (root / remote.filename).write_bytes(gzip.compress(raw, mtime=0))
        content = hashlib.md5(raw).hexdigest()
        published[split] = (RemoteFile(remote.url, md5(root / remote.filename)), content)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST", published)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DEBIAN_DIR", root / "no-debian-package")
    return arrays


def test_from_debian_package(tmp_path):
    """The real dataset, offline: CI installs dataset-fashion-mnist (.ci/run)."""
    if not DEBIAN.is_dir():
        unavailable("Fashion-MNIST", f"{DEBIAN} is missing: apt-get install dataset-fashion-mnist")
    meta = prepare_dataset("fashion_mnist", tmp_path / "fm", tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists() or not any((tmp_path / "downloads").iterdir())
    assert meta["splits"] == {"train": 60_000, "test": 10_000}
    assert meta["image_shape"] == [28, 28, 1] and meta["classes"][9] == "Ankle boot"
    data = load_dataset(tmp_path / "fm")
    assert np.bincount(data.train.labels.numpy()).tolist() == [6000] * 10
    assert np.bincount(data.test.labels.numpy()).tolist() == [1000] * 10
    assert meta["mean"][0] == pytest.approx(0.2860, abs=1e-4)  # the published statistics
    assert meta["std"][0] == pytest.approx(0.3530, abs=1e-4)


def test_from_official_files_over_http(server, tmp_path, monkeypatch):  # noqa: F811
    root, url = server
    arrays = make_official(root, monkeypatch)
    meta = prepare_dataset("fashion_mnist", tmp_path / "fm", tmp_path / "dl", mirror=url)
    assert meta["splits"] == {"train": 60, "test": 20}
    data = load_dataset(tmp_path / "fm")
    got = data.train.images.permute(0, 2, 3, 1).numpy()[..., 0]
    assert np.array_equal(got, arrays["train_images"])
    assert np.array_equal(data.test.labels.numpy(), arrays["test_labels"])


@pytest.mark.parametrize("damage", ["content", "gzip", "magic"])
def test_corrupt_file_is_refused_in_one_line(server, tmp_path, monkeypatch, damage):  # noqa: F811
    root, url = server
    make_official(root, monkeypatch)
    # the damaged file sits where Debian's package would be (a checksum on the .gz cannot help)
    debian = tmp_path / "debian"
    debian.mkdir()
    name = "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress((root / name).read_bytes())
    if damage == "content":
        raw = raw[:-1] + bytes([(raw[-1] + 1) % 10])
        blob = gzip.compress(raw)
    elif damage == "gzip":
        blob = (root / name).read_bytes()[:-10]
    else:
        blob = gzip.compress(b"\x00\x00\x08\x09" + raw[4:])
    (debian / name).write_bytes(blob)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DEBIAN_DIR", debian)
    with pytest.raises(DataError) as refused:
        prepare_dataset("fashion_mnist", tmp_path / "fm", tmp_path / "dl", mirror=url)
    assert "\n" not in str(refused.value) and name in str(refused.value)
    assert not (tmp_path / "fm").exists()


def test_idx_reader_checks_magic_and_shape():
    raw = idx(np.zeros((2, 28, 28)))
    content = hashlib.md5(raw).hexdigest()
    assert fashion_mnist.read_idx(raw, "x", content).shape == (2, 28, 28)
    short = raw[:-1]
    with pytest.raises(DataError, match="bytes of data for shape"):
        fashion_mnist.read_idx(short, "x", hashlib.md5(short).hexdigest())


def test_train_subset_is_stratified_seed_independent_and_stable(tmp_path, digits_dir):
    np.random.seed(1)  # the experiment's global seed must not move the draw
    a = prepare_dataset("digits", tmp_path / "a", train_subset=500)
    np.random.seed(2)
    b = prepare_dataset("digits", tmp_path / "b", train_subset=500)
    assert a["sha256"] == b["sha256"]  # same images, whatever the seed
    assert a["train_subset"] == 500 and a["train_full"] == 1437 and a["splits"]["train"] == 500
    full = load_dataset(digits_dir).train.labels.numpy()
    part = load_dataset(tmp_path / "a").train.labels.numpy()
    share = np.bincount(part, minlength=10) / 500
    assert np.abs(share - np.bincount(full, minlength=10) / len(full)).max() < 0.01
    assert load_dataset(tmp_path / "a").test.labels.shape == (360,)  # the test split is whole
    # a subset of the full training split, in its order
    full_images = np.load(digits_dir / "train_images.npy")
    rows = {r.tobytes() for r in full_images}
    assert all(r.tobytes() in rows for r in np.load(tmp_path / "a" / "train_images.npy"))
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["train_subset"] == 500


def test_train_subset_out_of_range_is_refused_before_prepare(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params(**{"data.train_subset": 2000}))
    with pytest.raises(ConfigError, match=r"data.train_subset must be in \[10, 1437\], got 2000"):
        check_file(path)
