"""CIFAR ResNets: output shapes, parameter counts, named features."""

from __future__ import annotations

import pytest
import torch

from kdlab.architectures import load_archs
from kdlab.errors import ConfigError
from kdlab.models import make_model

# Option-B CIFAR ResNets (1×1 conv + BN shortcuts), 3 input channels, 10 classes. The counts are
# the ones published for RepDistiller's resnet20 / resnet56 (0.27M / 0.86M), written here once
# and cross-checked below by an independent closed-form count.
PUBLISHED_PARAMS = {"resnet20": 272_474, "resnet56": 855_770}
PUBLISHED_CIFAR100_MILLIONS = {"resnet8x4": 1.23, "resnet32x4": 7.43}
"""The KD literature's CIFAR-100 tables (RepDistiller's models; e.g. CRD, DKD): 100 classes."""

RESNETS = sorted(name for name, spec in load_archs().items() if spec.family == "resnet")


def closed_form_params(arch: str, in_channels: int, num_classes: int) -> int:
    config = load_archs()[arch].config
    blocks = (config["depth"] - 2) // 6
    stem, *widths = config["widths"]
    total = in_channels * stem * 9 + 2 * stem  # stem conv + BN
    channels = stem
    for width, stride in zip(widths, (1, 2, 2), strict=True):
        for b in range(blocks):
            total += channels * width * 9 + width * width * 9 + 4 * width  # 2 convs + 2 BNs
            if b == 0 and (stride != 1 or channels != width):
                total += channels * width + 2 * width  # 1×1 shortcut conv + BN
            channels = width
    return total + channels * num_classes + num_classes  # fc


@pytest.mark.parametrize("arch", ["resnet20", "resnet56"])
def test_parameter_count_matches_published_value(arch):
    model = make_model(arch, in_channels=3, num_classes=10)
    count = sum(p.numel() for p in model.parameters())
    assert count == PUBLISHED_PARAMS[arch]
    assert count == closed_form_params(arch, 3, 10)


@pytest.mark.parametrize("arch", sorted(PUBLISHED_CIFAR100_MILLIONS))
def test_wide_resnets_of_repdistiller_have_the_published_size(arch):
    model = make_model(arch, in_channels=3, num_classes=100)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PUBLISHED_CIFAR100_MILLIONS[arch]
    assert count == closed_form_params(arch, 3, 100)
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in feats.stages.values()] == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8)]  # fmt: skip
    assert feats.embedding.shape == (2, 256)


@pytest.mark.parametrize("arch", RESNETS)
def test_any_input_channels_and_classes(arch):
    model = make_model(arch, in_channels=1, num_classes=7)
    assert sum(p.numel() for p in model.parameters()) == closed_form_params(arch, 1, 7)


@pytest.mark.parametrize(("arch", "size"), [("resnet20", 32), ("resnet56", 32), ("resnet20", 8)])
def test_output_and_feature_shapes(arch, size):
    model = make_model(arch, in_channels=3, num_classes=100).eval()
    x = torch.randn(4, 3, size, size)
    feats = model.forward_features(x)
    assert feats.logits.shape == (4, 100)
    assert feats.embedding.shape == (4, 64)
    assert list(feats.stages) == ["stage1", "stage2", "stage3"]
    assert [tuple(t.shape) for t in feats.stages.values()] == [
        (4, 16, size, size),
        (4, 32, size // 2, size // 2),
        (4, 64, size // 4, size // 4),
    ]
    assert torch.equal(model(x), feats.logits)
    assert torch.allclose(feats.embedding, feats.stages["stage3"].mean(dim=(2, 3)), atol=1e-6)


def test_stage_names_are_module_names_so_hooks_see_the_same_tensors():
    model = make_model("resnet8", in_channels=3, num_classes=10).eval()
    captured = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
        for name in model.stage_names
    ]
    feats = model.forward_features(torch.randn(2, 3, 16, 16))
    for handle in handles:
        handle.remove()
    for name in model.stage_names:
        assert torch.equal(captured[name], feats.stages[name])


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ConfigError, match=r"arch must be one of resnet8, resnet14, .*got 'vgg'"):
        make_model("vgg", 3, 10)
