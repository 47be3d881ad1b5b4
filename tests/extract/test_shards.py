"""Dataset-scale activation shards: streamed writing, verified reading, one token a row."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from kdlab.data.loader import BatchLoader, Split
from kdlab.errors import DataError
from kdlab.extract.activations import capture_layers
from kdlab.extract.shards import ShardSet, ShardWriter, write_metadata
from kdlab.extract.stream import write_shards
from kdlab.models import make_model


def written(tmp_path, rows=103, d=5, shard_rows=20, dtype="float32", batch=17):
    """A ShardSet of `rows` random rows added `batch` at a time; (set, values, index)."""
    values = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    index = np.stack([np.arange(rows) // 3, np.arange(rows) % 3], axis=1)
    writer = ShardWriter(tmp_path, d, dtype, shard_rows)
    for start in range(0, rows, batch):
        part = slice(start, start + batch)
        writer.add(values[part], index[part, 0], index[part, 1])
    shards = writer.close()
    write_metadata(tmp_path, layer="x", d=d, dtype=dtype, rows=writer.rows, shards=shards)
    return ShardSet(tmp_path), values, index


def test_rows_come_back_exactly_in_any_order(tmp_path):
    shards, values, index = written(tmp_path)
    assert shards.rows == 103 and shards.n_shards == 6
    assert [s["rows"] for s in shards.meta["shards"]] == [20] * 5 + [3]  # the last is not padded
    assert (tmp_path / "acts_00005.bin").stat().st_size == 3 * 5 * 4
    order = np.random.default_rng(1).permutation(103)
    assert np.array_equal(shards.take(order), values[order])
    assert np.array_equal(shards.index(), index)
    blocks = list(shards.blocks(7))
    assert np.array_equal(np.concatenate([b for _, b in blocks]), values)
    assert [start for start, _ in blocks][:4] == [0, 7, 14, 20]


def test_float16_rows_are_the_float16_values(tmp_path):
    shards, values, _ = written(tmp_path, dtype="float16")
    assert np.array_equal(shards.take(np.arange(103)), values.astype(np.float16).astype(np.float32))


def flip_first_byte(d):
    data = (d / "acts_00002.bin").read_bytes()
    (d / "acts_00002.bin").write_bytes(bytes([data[0] ^ 1]) + data[1:])


def truncate(d):
    (d / "index_00001.bin").write_bytes((d / "index_00001.bin").read_bytes()[:-8])


def edit_metadata(d):
    meta = d / "metadata.json"
    meta.write_text(meta.read_text().replace('"rows": 103', '"rows": 104'))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (flip_first_byte, "acts_00002.bin does not match its sha256"),
        (truncate, "index_00001.bin holds 312 bytes, not 320"),
        (lambda d: (d / "acts_00003.bin").unlink(), "acts_00003.bin is missing"),
        (edit_metadata, "metadata.json does not match its checksum"),
        (lambda d: (d / "metadata.json").write_text("{"), "metadata.json is corrupt"),
    ],
)
def test_a_damaged_shard_is_refused_in_one_line_naming_it(tmp_path, damage, said):
    written(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataError, match=said) as caught:
        ShardSet(tmp_path)
    assert "\n" not in str(caught.value) and "dvc repro -f shards" in str(caught.value)


def test_nan_in_a_shard_is_refused(tmp_path):
    shards, values, _ = written(tmp_path)
    info = shards.meta["shards"][1]
    bad = values[20:40].copy()
    bad[3, 2] = np.nan
    (tmp_path / info["acts"]).write_bytes(bad.tobytes())
    meta = json.loads((tmp_path / "metadata.json").read_text())  # a consistent checksum...
    info["acts_sha256"] = hashlib.sha256(bad.tobytes()).hexdigest()
    meta["shards"][1] = info
    meta.pop("metadata_sha256")
    write_metadata(tmp_path, **{k: v for k, v in meta.items() if k != "format"})
    with pytest.raises(DataError, match=r"acts_00001\.bin holds NaN"):  # ...and still refused
        ShardSet(tmp_path)


def test_the_writer_refuses_nan_and_wrong_widths(tmp_path):
    writer = ShardWriter(tmp_path, 4, "float32", 10)
    with pytest.raises(DataError, match="NaN or infinite"):
        writer.add(np.full((2, 4), np.inf, np.float32), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"takes \(n, 4\)"):
        writer.add(np.zeros((2, 3), np.float32), np.zeros(2), np.zeros(2))


def image_split(n=23, size=8):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    return Split(images, torch.arange(n) % 10)


@pytest.mark.parametrize(("arch", "layer", "tokens"),
                         [("resnet8", "stage2", 16), ("resnet8", "embedding", 1),
                          ("vit_tiny", "block1", 17)])  # fmt: skip
def test_every_sample_every_token_in_order(tmp_path, arch, layer, tokens):
    split = image_split()
    model = make_model(arch, 1, 10, 8).eval()
    meta = write_shards(model, split, "train", [0.5], [0.25], [layer], tmp_path / "out",
                        shard_rows=50, dtype="float32", batch_size=6, model_info={"arch": arch},
                        seed=0)  # fmt: skip
    shards = ShardSet(tmp_path / "out" / layer)
    assert meta[layer]["tokens_per_sample"] == tokens and shards.rows == 23 * tokens
    index = shards.index()
    assert np.array_equal(index[:, 0], np.repeat(np.arange(23), tokens))
    assert np.array_equal(index[:, 1], np.tile(np.arange(tokens), 23))
    x = next(iter(BatchLoader(split, 23, [0.5], [0.25], train=False))).images
    with torch.no_grad(), capture_layers(model, [layer]) as acts:
        model(x)
    out = acts[layer]
    expected = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]) if out.ndim == 4 \
        else out.reshape(-1, out.shape[-1])  # fmt: skip
    np.testing.assert_allclose(shards.take(np.arange(shards.rows)), expected.numpy(), atol=1e-5)


def test_sequence_rows_are_the_valid_frames_as_computed_alone(tmp_path):
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 9, 3, 7, 9, 2])
    frames = torch.randn(6, 9, 4, generator=gen) * (torch.arange(9)[None, :, None]
                                                     < lengths[:, None, None])  # fmt: skip
    split = Split(frames, torch.arange(6) % 3, lengths)
    model = make_model("spoter_tiny", 4, 3, 9).eval()
    write_shards(model, split, "test", [0.0] * 4, [1.0] * 4, ["encoder.0"], tmp_path / "out",
                 shard_rows=8, dtype="float32", batch_size=4, model_info={}, seed=0)  # fmt: skip
    shards = ShardSet(tmp_path / "out" / "encoder.0")
    assert shards.rows == int(lengths.sum())  # padding is never written
    index = shards.index()
    got = shards.take(np.arange(shards.rows))
    for i, n in enumerate(lengths.tolist()):
        alone = frames[i : i + 1, :n]
        with torch.no_grad(), capture_layers(model, ["encoder.0"]):
            feats = model.forward_features(alone)
        rows = index[:, 0] == i
        assert np.array_equal(index[rows, 1], np.arange(n))
        np.testing.assert_allclose(got[rows], feats.stages["encoder.0"][0].numpy(), atol=1e-5)
