"""The small ViT: named token stages, and which KD methods it can serve."""

from __future__ import annotations

import re

import pytest
import torch

from kdlab.distill.base import PairInfo
from kdlab.distill.registry import make_distiller
from kdlab.errors import ConfigError
from kdlab.models import make_model, probe_shapes


@pytest.mark.parametrize(("size", "channels", "tokens"), [(8, 1, 17), (32, 3, 65)])
def test_shapes(size, channels, tokens):
    model = make_model("vit_tiny", channels, 10, image_size=size).eval()
    feats = model.forward_features(torch.randn(3, channels, size, size))
    assert list(feats.stages) == ["block1", "block2", "block3", "block4"]
    assert all(t.shape == (3, tokens, 64) for t in feats.stages.values())
    assert feats.embedding.shape == (3, 64) and feats.logits.shape == (3, 10)
    # forward_features reproduces torchvision's own forward.
    x = torch.randn(2, channels, size, size)
    assert torch.allclose(model.forward_features(x).logits, model.vit(x), atol=1e-6)


def test_stage_hooks_see_the_stage_outputs():
    model = make_model("vit_tiny", 1, 10, image_size=8).eval()
    seen = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
               for n, m in model.stage_modules().items()]  # fmt: skip
    feats = model.forward_features(torch.randn(2, 1, 8, 8))
    for handle in handles:
        handle.remove()
    assert all(torch.equal(seen[n], feats.stages[n]) for n in model.stage_names)


@pytest.mark.parametrize("method", ["fitnets", "at", "nst", "ft"])
def test_methods_needing_feature_maps_refuse_a_vit(method):
    vit, resnet = make_model("vit_tiny", 3, 10, 32), make_model("resnet20", 3, 10, 32)
    pair = PairInfo(probe_shapes(vit, 3, 32, 32), probe_shapes(resnet, 3, 32, 32))
    message = f"kd.method {method} needs convolutional feature maps (C, H, W); the student's"
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_distiller(method, None, pair)


@pytest.mark.parametrize("method", ["logit", "rkd"])
def test_logit_and_rkd_serve_a_vit_pair(method):
    vit, resnet = make_model("vit_tiny", 3, 10, 32), make_model("resnet20", 3, 10, 32)
    pair = PairInfo(probe_shapes(vit, 3, 32, 32), probe_shapes(resnet, 3, 32, 32))
    distiller = make_distiller(method, None, pair)
    x = torch.randn(4, 3, 32, 32)
    loss = distiller.loss(vit.forward_features(x), resnet.forward_features(x), None)
    assert torch.isfinite(loss) and loss.item() > 0
