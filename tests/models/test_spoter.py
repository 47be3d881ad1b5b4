"""The SPOTER-shaped family: a padded batch computes what each sample computes alone, padded
frames get exactly zero attention and never reach what is extracted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.data.loader import padding_mask
from kdlab.extract.activations import capture_layers
from kdlab.extract.attention import capture_attention, mha_modules
from kdlab.models import make_model

LENGTHS = [29, 7, 1, 18]


def padded_batch(channels: int, t_max: int = 29, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(len(LENGTHS), t_max, channels, generator=gen)
    mask = padding_mask(lengths, t_max)
    return x.masked_fill(mask[..., None], 0.0), mask, lengths


@pytest.mark.parametrize(("arch", "channels"), [("spoter_small", 12), ("spoter_tiny", 12),
                                                ("spoter", 108)])  # fmt: skip
def test_padded_batch_equals_each_sample_alone(arch, channels):
    torch.manual_seed(0)
    model = make_model(arch, channels, 9, 29).eval()
    x, mask, lengths = padded_batch(channels)
    layers = list(model.hook_points())
    with torch.no_grad(), capture_attention(model) as attn, capture_layers(model, layers) as acts:
        logits = model(x, mask)
        batch_attn = {k: v.clone() for k, v in attn.items()}
        batch_acts = {k: v.clone() for k, v in acts.items()}
        for i, length in enumerate(lengths.tolist()):
            alone = model(x[i : i + 1, :length])
            assert torch.allclose(alone, logits[i : i + 1], atol=1e-5), (arch, i)
            for name, weights in attn.items():
                queries = weights.shape[2]
                padded = batch_attn[name][i]
                assert torch.allclose(padded[:, :queries, :length], weights[0], atol=1e-5)
                assert (padded[:, :, length:] == 0).all(), name  # exactly zero, every query
            for layer, value in acts.items():
                assert torch.allclose(batch_acts[layer][i], value[0], atol=1e-5), layer


def test_padding_values_never_matter():
    torch.manual_seed(1)
    model = make_model("spoter_small", 12, 9, 29).eval()
    x, mask, _ = padded_batch(12)
    garbage = x + 100.0 * mask[..., None]  # any value at padded frames
    layers = list(model.hook_points())
    with torch.no_grad():
        with capture_layers(model, layers) as clean:
            logits = model(x, mask)
            clean = {k: v.clone() for k, v in clean.items()}
        with capture_layers(model, layers) as dirty:
            assert torch.allclose(model(garbage, mask), logits, atol=1e-5)
            for layer in layers:
                assert torch.allclose(dirty[layer], clean[layer], atol=1e-5), layer


def test_attention_modules_are_named_for_readers_and_shaped_per_head():
    model = make_model("spoter", 108, 100, 64)
    names = list(mha_modules(model))
    assert names == [*(f"encoder.{i}.self_attn" for i in range(6)),
                     *(f"decoder.{i}.cross_attn" for i in range(6))]  # fmt: skip
    assert all(m.num_heads == 9 and m.embed_dim == 108 for m in mha_modules(model).values())
    assert isinstance(model.frame_proj, nn.Identity)  # 108 = 54 keypoints × 2: no projection
    assert model.pos.shape == (1, 108)  # SPOTER's one position vector for every frame
    assert all(layer.spoter_decoder for layer in model.decoder)
    x, mask, _ = padded_batch(108, t_max=64)
    with torch.no_grad(), capture_attention(model.eval()) as attn:
        model(x, mask)
    assert attn["encoder.0.self_attn"].shape == (4, 9, 64, 64)
    assert attn["decoder.5.cross_attn"].shape == (4, 9, 1, 64)
    rows = attn["decoder.5.cross_attn"].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_small_model_projects_frames_and_refuses_longer_sequences():
    model = make_model("spoter_small", 3, 4, 48)
    assert isinstance(model.frame_proj, nn.Linear) and model.pos.shape == (48, 64)
    with pytest.raises(ValueError, match="at most 48"):
        model(torch.zeros(1, 49, 3))


def test_gradient_reaches_every_parameter_through_a_masked_batch():
    torch.manual_seed(2)
    model = make_model("spoter_tiny", 12, 9, 29).train()
    x, mask, _ = padded_batch(12)
    model(x, mask).logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_kd_between_sequence_transformers_offers_the_methods_that_apply():
    from kdlab.distill.spec import pair_shapes
    from kdlab.distill.specs import get_spec, methods_serving
    from kdlab.errors import ConfigError

    pair, teacher_layers, student_layers = pair_shapes("japanese_vowels", "spoter_small",
                                                       "spoter_tiny")  # fmt: skip
    assert methods_serving(pair) == ["crd", "dkd", "logit", "minilm", "none", "rkd"]
    assert pair.student.kind == pair.teacher.kind == "sequence"
    assert "encoder.0" in student_layers and "decoder.1" in teacher_layers
    for method, said in (("at", "with a sequence transformer"),):
        spec = get_spec(method)
        with pytest.raises(ConfigError, match=said):
            spec.check(spec.params_cls(), pair)
