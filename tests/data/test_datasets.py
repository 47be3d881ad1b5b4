"""The `prepare` format: arrays, meta.json, checksums, fixed split, atomic writes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kdlab.checksum import sha256_file
from kdlab.data import datasets
from kdlab.data.datasets import DATASETS, Arrays, prepare_dataset, write_dataset
from kdlab.data.loader import load_dataset
from kdlab.errors import DataError


def test_digits_arrays_and_meta(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    train_x = np.load(digits_dir / "train_images.npy")
    train_y = np.load(digits_dir / "train_labels.npy")
    test_x = np.load(digits_dir / "test_images.npy")
    test_y = np.load(digits_dir / "test_labels.npy")
    assert train_x.dtype == np.uint8 and train_x.shape == (1437, 8, 8, 1)
    assert test_x.dtype == np.uint8 and test_x.shape == (360, 8, 8, 1)
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert meta["classes"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    assert meta["image_shape"] == [8, 8, 1]
    assert meta["splits"] == {"train": 1437, "test": 360}
    assert train_x.max() == 255 and train_x.min() == 0
    assert meta["mean"][0] == pytest.approx(train_x.mean() / 255, rel=1e-9)
    assert meta["std"][0] == pytest.approx((train_x / 255).std(), rel=1e-9)
    for name, digest in meta["sha256"].items():
        assert sha256_file(digits_dir / name) == digest
    # Stratified: every class is in the test split in about its share.
    assert np.bincount(test_y, minlength=10).min() >= 34


def test_split_is_fixed_and_independent_of_the_experiment_seed(tmp_path, digits_dir):
    np.random.seed(12345)  # a different global seed must not move the split
    again = prepare_dataset("digits", tmp_path / "digits")
    assert again["sha256"] == json.loads((digits_dir / "meta.json").read_text())["sha256"]


def test_corrupt_array_is_detected(tmp_path, digits_dir):
    copy = tmp_path / "digits"
    prepare_dataset("digits", copy)
    path = copy / "test_images.npy"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=re.escape("test_images.npy does not match its sha256")):
        load_dataset(copy)


def test_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match=r"not a prepared dataset .*`dvc repro prepare`"):
        load_dataset(tmp_path / "nothing")


def test_failed_write_leaves_no_partial_dataset(tmp_path, monkeypatch):
    arrays = DATASETS["digits"].build(tmp_path)
    real_save = np.save
    calls = []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(path, array)

    monkeypatch.setattr(datasets.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(arrays, "digits", tmp_path / "out" / "digits")
    assert list((tmp_path / "out").iterdir()) == []  # neither the dataset nor a temp dir


def test_builder_bug_never_reaches_disk(tmp_path):
    bad = Arrays(
        train_images=np.zeros((4, 8, 8, 1), np.float32),  # wrong dtype
        train_labels=np.zeros(4, np.int64),
        test_images=np.zeros((2, 8, 8, 1), np.uint8),
        test_labels=np.zeros(2, np.int64),
        classes=("a",),
    )
    with pytest.raises(AssertionError):
        write_dataset(bad, "bad", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
