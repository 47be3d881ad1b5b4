"""Sequence datasets end to end: the on-disk format, the UEA files through the download path
(a local HTTP server on 127.0.0.1), the padded, masked, seeded batches."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from kdlab.data.datasets import DATASETS, prepare_dataset
from kdlab.data.loader import BatchLoader, load_dataset, padding_mask, time_crop
from kdlab.errors import DataError

from ..conftest import uea_mirror
from .test_sources import RangeHandler, server  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def motifs(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "seq_motifs"
    prepare_dataset("seq_motifs", out)
    return out


def file_hashes(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_seq_motifs_is_padded_sequences_with_lengths(motifs, tmp_path):
    meta = json.loads((motifs / "meta.json").read_text())
    assert meta["kind"] == "sequence" and meta["sequence_shape"] == [48, 3]
    assert meta["splits"] == {"train": 600, "test": 300} and meta["num_classes"] == 4
    data = load_dataset(motifs)
    lengths = data.train.lengths
    assert data.train.images.dtype == torch.float32 and data.train.images.shape == (600, 48, 3)
    assert int(lengths.min()) >= 16 and int(lengths.max()) <= 48
    padded = padding_mask(lengths, 48)
    assert (data.train.images[padded] == 0).all()
    assert (data.train.images[~padded].abs().sum(-1) > 0).all()
    # the class is where the motif (a peak in channel 0) is: frames 2-10, 14-22, ...
    peak = torch.where(padded, -1e9, data.train.images[..., 0]).argmax(1)
    assert ((peak // 12) == data.train.labels).float().mean() > 0.95
    again = tmp_path / "again"
    prepare_dataset("seq_motifs", again)
    assert file_hashes(again) == file_hashes(motifs)  # the same bytes every time


def test_a_corrupt_sequence_array_is_refused(motifs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(motifs, copy)
    lengths = np.load(copy / "test_lengths.npy")
    lengths[0] += 1
    np.save(copy / "test_lengths.npy", lengths)
    with pytest.raises(DataError, match=r"test_lengths\.npy does not match its sha256"):
        load_dataset(copy)


def test_eval_batches_are_normalised_over_valid_frames_and_zero_at_padding(motifs):
    data = load_dataset(motifs)
    ev = BatchLoader(data.train, 1000, data.meta["mean"], data.meta["std"], train=False)
    (x, labels, indices, mask), = list(ev)  # fmt: skip
    assert torch.equal(mask, padding_mask(data.train.lengths, 48))
    assert (x[mask] == 0).all()
    valid = x[~mask].double()  # (frames, C)
    assert torch.allclose(valid.mean(0), torch.zeros(3, dtype=torch.double), atol=1e-5)
    assert torch.allclose(valid.std(0), torch.ones(3, dtype=torch.double), atol=1e-3)
    assert torch.equal(indices, torch.arange(600)) and torch.equal(labels, data.train.labels)


def train_loader(data, **kw):
    return BatchLoader(data.train, 64, data.meta["mean"], data.meta["std"], train=True, seed=3,
                       **{"time_crop": 0.6, "scaling": 0.2, "jitter": 0.1, **kw})  # fmt: skip


def epoch(loader, number):
    loader.set_epoch(number)
    return list(loader)


def test_sequence_augmentation_is_drawn_from_seed_and_epoch(motifs):
    data = load_dataset(motifs)
    first, again = epoch(train_loader(data), 4), epoch(train_loader(data), 4)
    assert all(torch.equal(a.images, b.images) and torch.equal(a.mask, b.mask)
               for a, b in zip(first, again, strict=True))  # fmt: skip
    other = epoch(train_loader(data), 5)
    assert not torch.equal(first[0].images, other[0].images)
    for batch in first:
        assert (batch.images[batch.mask] == 0).all()  # padding stays exactly zero
        lengths = (~batch.mask).sum(1)
        original = data.train.lengths[batch.indices]
        assert (lengths <= original).all() and (lengths >= torch.round(0.6 * original)).all()
    off = epoch(train_loader(data, time_crop=1.0, scaling=0.0, jitter=0.0), 4)[0]
    expected = (data.train.images[off.indices] - torch.tensor(data.meta["mean"])) / torch.tensor(
        data.meta["std"])  # fmt: skip
    expected[off.mask] = 0
    assert torch.allclose(off.images, expected.float(), atol=1e-5)


def test_time_crop_moves_a_window_of_each_sample_to_frame_zero():
    x = torch.arange(2 * 10, dtype=torch.float32).view(2, 10, 1)
    lengths = torch.tensor([10, 4])
    cropped, new = time_crop(x, lengths, keep=torch.tensor([0.5, 0.5]),
                             where=torch.tensor([0.99, 0.0]))  # fmt: skip
    assert new.tolist() == [5, 2]
    assert cropped[0, :5, 0].tolist() == [5, 6, 7, 8, 9]  # the last window of sample 0
    assert cropped[1, :2, 0].tolist() == [10, 11]  # the first window of sample 1


@pytest.mark.parametrize(("name", "train", "test", "shape", "classes"), [
    ("japanese_vowels", 270, 370, [29, 12], 9),
    ("pickup_gesture_wiimote_z", 50, 50, [361, 1], 10),
    ("basic_motions", 40, 40, [100, 6], 4),
])  # fmt: skip
def test_uea_datasets_from_a_mirror_over_http(server, tmp_path, name, train, test, shape,  # noqa: F811
                                              classes):  # fmt: skip
    root, url = server
    spec = DATASETS[name]
    for remote in spec.files:
        (root / remote.filename).write_bytes((uea_mirror() / remote.filename).read_bytes())
    meta = prepare_dataset(name, tmp_path / name, tmp_path / "dl", mirror=url)
    assert meta["splits"] == {"train": train, "test": test} and meta["sequence_shape"] == shape
    assert meta["num_classes"] == classes and meta["classes"] == list(spec.classes)
    assert sorted(r[0] for r in RangeHandler.requests) == sorted(f.filename for f in spec.files)
    data = load_dataset(tmp_path / name)
    assert int(data.test.lengths.max()) <= shape[0] and int(data.train.lengths.min()) >= 1
    assert np.bincount(data.train.labels.numpy()).min() >= 1


def test_a_corrupt_ts_download_is_refused_and_removed(server, tmp_path):  # noqa: F811
    root, url = server
    for remote in DATASETS["japanese_vowels"].files:
        text = (uea_mirror() / remote.filename).read_bytes()
        (root / remote.filename).write_bytes(text.replace(b"@data", b"@data\n", 1))
    with pytest.raises(DataError, match=r"JapaneseVowels_TRAIN.ts from .* has MD5 .*expected"):
        prepare_dataset("japanese_vowels", tmp_path / "jv", tmp_path / "dl", mirror=url)
    assert not (tmp_path / "jv").exists() and not list((tmp_path / "dl").iterdir())
