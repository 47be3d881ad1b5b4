"""Wide ResNets: the published sizes, the blocks, the named features."""

from __future__ import annotations

import pytest
import torch

from kdlab.models import make_model

PUBLISHED_CIFAR100_MILLIONS = {"wrn_16_2": 0.70, "wrn_40_2": 2.26}
"""The KD literature's CIFAR-100 tables (RepDistiller's models; e.g. CRD, DKD): 100 classes."""


def closed_form_params(depth: int, widen: int, in_channels: int, num_classes: int) -> int:
    blocks = (depth - 4) // 6
    total, channels = in_channels * 16 * 9, 16  # stem conv, no BN (pre-activation blocks)
    for width in (16 * widen, 32 * widen, 64 * widen):
        for b in range(blocks):
            total += 2 * channels + channels * width * 9  # BN + conv1
            total += 2 * width + width * width * 9  # BN + conv2
            if b == 0 and channels != width:
                total += channels * width  # 1×1 shortcut conv
            channels = width
    return total + 2 * channels + channels * num_classes + num_classes  # head BN + fc


@pytest.mark.parametrize("arch", sorted(PUBLISHED_CIFAR100_MILLIONS))
def test_parameter_count_matches_published_value(arch):
    _, depth, widen = arch.split("_")
    model = make_model(arch, in_channels=3, num_classes=100)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PUBLISHED_CIFAR100_MILLIONS[arch]
    assert count == closed_form_params(int(depth), int(widen), 3, 100)
    assert sum(p.numel() for p in make_model(arch, 1, 7).parameters()) == closed_form_params(
        int(depth), int(widen), 1, 7)  # fmt: skip


def test_features_are_the_group_outputs_and_the_pooled_preactivation():
    model = make_model("wrn_16_2", in_channels=3, num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = model.forward_features(x)
    assert [tuple(t.shape) for t in feats.stages.values()] == [
        (3, 32, 32, 32), (3, 64, 16, 16), (3, 128, 8, 8)]  # fmt: skip
    expected = torch.relu(model.head[0](feats.stages["stage3"])).mean(dim=(2, 3))
    assert torch.allclose(feats.embedding, expected, atol=1e-6)
    assert torch.equal(model(x), feats.logits)
    assert len(model.stage1) == 2 and len(make_model("wrn_40_2", 3, 10).stage3) == 6


def test_an_identity_block_adds_its_input_unchanged():
    """Pre-activation: the shortcut of a same-shape block is the raw input, not BN-ReLU of it."""
    block = make_model("wrn_16_2", 3, 10).stage1[1].eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(block(x), x)
