"""Activation capture, the memmap cache, and per-head attention weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from kdlab.data.loader import BatchLoader, Split
from kdlab.errors import DataError
from kdlab.extract.activations import ActivationCache, capture_layers, extract_all, sample_indices
from kdlab.extract.attention import capture_attention, mha_modules
from kdlab.models import make_model
from kdlab.training.checkpoint import save_checkpoint


@pytest.mark.parametrize(("arch", "size"), [("resnet8", 8), ("vit_tiny", 8)])
def test_hooked_activations_equal_the_forward_output(arch, size):
    model = make_model(arch, 1, 10, size).eval()
    x = torch.randn(5, 1, size, size)
    layers = list(model.hook_points())
    assert layers[-1] == "embedding" and len(layers) == len(model.stage_names) + 1
    with torch.no_grad(), capture_layers(model, layers) as acts:
        feats = model.forward_features(x)
    for name in model.stage_names:
        assert torch.equal(acts[name], feats.stages[name])
    assert torch.equal(acts["embedding"], feats.embedding)


def test_unknown_layer_is_refused():
    message = re.escape("extract.layers: 'stage9' is not a layer; valid: stage1")
    with (
        pytest.raises(DataError, match=message),
        capture_layers(make_model("resnet8", 1, 10), ["stage9"]),
    ):
        pass


def tiny_split(n=40, size=8):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, 1), generator=gen, dtype=torch.uint8)
    return Split(images.permute(0, 3, 1, 2), torch.arange(n) % 10)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_memmap_round_trip_is_exact(tmp_path, dtype):
    split = tiny_split()
    teacher = make_model("resnet8", 1, 10, 8).eval()
    student = make_model("vit_tiny", 1, 10, 8).eval()
    indices = sample_indices(len(split), 25, seed=3)
    models = {"teacher": (teacher, {"sha256": "t"}), "student": (student, {"sha256": "s"})}
    meta = extract_all(models, split, [0.5], [0.25], indices, None, tmp_path / "acts",
                       dtype=dtype, batch_size=7)  # fmt: skip
    cache = ActivationCache(tmp_path / "acts")
    assert cache.models() == ["teacher", "student"] and meta["n"] == 25
    assert np.array_equal(cache.indices, indices)
    assert meta["indices"] == indices.tolist()
    assert meta["arrays"]["teacher/stage3"]["shape"] == [25, 64, 2, 2]
    assert np.array_equal(cache.labels, split.labels[indices].numpy())
    (images, _, _, _), = list(BatchLoader(Split(split.images[indices], split.labels[indices]), 100,
                                    [0.5], [0.25], train=False))  # fmt: skip
    for name, model in (("teacher", teacher), ("student", student)):
        with torch.no_grad():
            feats = model.forward_features(images)
        for layer in cache.layers(name):
            stored = cache.get(name, layer)
            expected = (feats.embedding if layer == "embedding" else feats.stages[layer]).numpy()
            assert isinstance(stored, np.memmap) and stored.dtype == np.dtype(dtype)
            assert np.array_equal(stored, expected.astype(dtype)), (name, layer)
    assert cache.attention_modules("teacher") == []
    assert len(cache.attention_modules("student")) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_sample_indices_are_seeded_and_sorted():
    a = sample_indices(360, 100, seed=1)
    assert np.array_equal(a, sample_indices(360, 100, seed=1)) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_indices(360, 100, seed=2))
    assert len(sample_indices(50, 100, seed=1)) == 50


def test_stale_cache_is_detected(tmp_path):
    from kdlab.checksum import sha256_file

    model = make_model("resnet8", 1, 10, 8)
    ckpt = tmp_path / "model.pt"
    save_checkpoint({"format": "x", "state_dict": model.state_dict()}, ckpt)
    extract_all({"teacher": (model, {"sha256": sha256_file(ckpt)})}, tiny_split(), [0.5], [0.25],
                np.arange(10), ["stage3"], tmp_path / "acts")  # fmt: skip
    cache = ActivationCache(tmp_path / "acts")
    cache.check_fresh({"teacher": ckpt})
    save_checkpoint({"format": "x", "state_dict": make_model("resnet8", 1, 10).state_dict()}, ckpt)
    with pytest.raises(DataError, match="is stale: its teacher activations come from another"):
        cache.check_fresh({"teacher": ckpt})


def test_vit_attention_weights():
    model = make_model("vit_tiny", 3, 10, 32).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        with capture_attention(model) as weights:
            captured = model(x)
    assert torch.allclose(plain, captured, atol=1e-5)  # capture does not change the model
    assert sorted(weights) == sorted(mha_modules(model)) and len(weights) == 4
    tokens = 65
    for w in weights.values():
        assert w.shape == (3, 4, tokens, tokens)  # per head, not averaged
        assert torch.allclose(w.sum(dim=-1), torch.ones(3, 4, tokens), atol=1e-5)
    maps = list(weights.values())
    assert not torch.allclose(maps[0], maps[1])  # every layer has its own weights
    assert not torch.allclose(maps[0][:, 0], maps[0][:, 1])  # heads differ


class PaddedEncoder(nn.Module):
    """A model that passes a key padding mask, as sequence models with padding do."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x, pad_mask):
        out, _ = self.attn(x, x, x, key_padding_mask=pad_mask, need_weights=False)
        return out


def test_padded_keys_get_no_attention():
    model = PaddedEncoder().eval()
    x = torch.randn(2, 6, 8)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    with torch.no_grad():
        plain = model(x, pad)
        with capture_attention(model) as weights:
            captured = model(x, pad)
    assert torch.allclose(plain[~pad], captured[~pad], atol=1e-6)
    w = weights["attn"]
    assert w.shape == (2, 2, 6, 6)
    assert torch.all(w[0, :, :, 4:] == 0)  # no mass on the padded keys
    assert torch.allclose(w.sum(dim=-1), torch.ones(2, 2, 6), atol=1e-6)
