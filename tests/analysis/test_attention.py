"""Attention measures against values computed by hand on constructed attention maps."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.analysis.attention import (
    attention_entropy,
    attention_rollout,
    cls_patch_attention,
    head_divergence,
    match_heads,
    mean_attention_distance,
    paired_layers,
)

T = 5  # a class token and a 2×2 grid of patches: (0,0) (0,1) (1,0) (1,1)


def uniform(n=2, heads=3, t=T):
    return torch.full((n, heads, t, t), 1.0 / t, dtype=torch.float64)


def one_hot(targets, n=2, t=T):
    """One head; query q attends only to key targets[q]."""
    a = torch.zeros(n, 1, t, t, dtype=torch.float64)
    for q, k in enumerate(targets):
        a[:, 0, q, k] = 1.0
    return a


def test_entropy_of_uniform_is_log_t_and_of_one_hot_is_zero():
    assert attention_entropy(uniform()).tolist() == pytest.approx([math.log(T)] * 3)
    assert attention_entropy(one_hot([0, 1, 2, 3, 4])).tolist() == pytest.approx([0.0])


def test_entropy_counts_valid_keys_only_and_valid_queries_only():
    mask = torch.tensor([[False, False, False, True, True]] * 2)  # the last two are padding
    # Uniform over all five keys: padded keys lose their weight, the rest is renormalised.
    assert attention_entropy(uniform(), mask).tolist() == pytest.approx([math.log(3)] * 3)
    # Padded queries are left out: make them look one-hot elsewhere; nothing changes.
    a = uniform(heads=1)
    a[:, :, 3:, :] = 0.0
    a[:, :, 3:, 0] = 1.0
    assert attention_entropy(a, mask).item() == pytest.approx(math.log(3))
    # A padded key never receives weight, even where the map leaked some to it.
    leaky = torch.zeros(2, 1, T, T, dtype=torch.float64)
    leaky[..., 0] = leaky[..., 3] = 0.5
    assert attention_entropy(leaky, mask).item() == pytest.approx(0.0)


def test_mean_distance_in_patches():
    # Each patch attends to itself: distance 0. To the diagonal opposite: sqrt(2).
    assert mean_attention_distance(one_hot([0, 1, 2, 3, 4])).item() == pytest.approx(0.0)
    opposite = one_hot([0, 4, 3, 2, 1])  # patch (0,0)↔(1,1), (0,1)↔(1,0)
    assert mean_attention_distance(opposite).item() == pytest.approx(math.sqrt(2))
    # Uniform over the 4 patches: from a corner of a 2×2 grid, (0 + 1 + 1 + √2) / 4.
    expected = (2 + math.sqrt(2)) / 4
    assert mean_attention_distance(uniform()).tolist() == pytest.approx([expected] * 3)
    # Attention on the class token does not count as distance: renormalised over patches.
    to_cls = one_hot([0, 0, 0, 0, 0])
    to_cls[:, :, 1:, 1:] += torch.eye(4, dtype=torch.float64)  # half on the class token
    assert mean_attention_distance(to_cls / to_cls.sum(-1, keepdim=True)).item() == 0.0


def test_masked_patches_get_no_weight_and_no_distance():
    mask = torch.tensor([[False, False, True, True, True]] * 2)  # one valid patch, (0,0)
    assert mean_attention_distance(uniform(), mask).tolist() == pytest.approx([0.0] * 3)
    mask = torch.tensor([[False, False, False, True, True]] * 2)  # (0,0) and (0,1)
    assert mean_attention_distance(uniform(), mask).tolist() == pytest.approx([0.5] * 3)


def test_class_token_attention_to_patches():
    assert cls_patch_attention(uniform()).tolist() == pytest.approx([4 / 5] * 3)
    assert cls_patch_attention(one_hot([0, 1, 2, 3, 4])).item() == 0.0
    mask = torch.tensor([[False, False, False, True, True]] * 2)
    assert cls_patch_attention(uniform(), mask).tolist() == pytest.approx([2 / 3] * 3)


def test_head_matching_recovers_a_known_permutation():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.softmax(3 * torch.randn(8, 4, T, T, generator=gen, dtype=torch.float64), -1)
    permutation = [2, 0, 3, 1]
    student = teacher[:, permutation]  # student head j is teacher head permutation[j]
    divergence = head_divergence(teacher, student)
    assert divergence.shape == (4, 4) and (divergence >= 0).all()
    assert (divergence <= math.log(2) + 1e-12).all()
    rows, cols, similarity = match_heads(divergence)
    assert [permutation[c] for c in cols] == list(rows)
    assert similarity == pytest.approx(1.0)
    # Fewer student heads (two of the teacher's, noisy): each matched to its own.
    noisy = torch.softmax(torch.log(teacher[:, [3, 1]]) + 0.3 * torch.randn(
        8, 2, T, T, generator=gen, dtype=torch.float64), -1)  # fmt: skip
    rows, cols, similarity = match_heads(head_divergence(teacher, noisy))
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 3, 1: 1}
    assert 0.5 < similarity < 1.0


def test_js_divergence_by_hand():
    p = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]], dtype=torch.float64)  # one head, two queries
    q = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]], dtype=torch.float64)
    # Query 0: disjoint supports, JS = ln 2; query 1: equal, 0. Mean over queries: ln(2) / 2.
    assert head_divergence(p, q).item() == pytest.approx(math.log(2) / 2)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(T, dtype=torch.float64).expand(2, 3, T, T)
    assert torch.allclose(attention_rollout([eye, eye, eye]), torch.eye(T, dtype=torch.float64))
    # One layer of uniform attention: ½·uniform + ½·I.
    rolled = attention_rollout([uniform()])
    expected = 0.5 * torch.full((T, T), 1 / T, dtype=torch.float64) + 0.5 * torch.eye(T)
    assert torch.allclose(rolled, expected.expand(2, T, T).to(torch.float64))
    assert torch.allclose(rolled.sum(-1), torch.ones(2, T, dtype=torch.float64))


def test_layers_are_paired_by_relative_depth():
    assert paired_layers(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert paired_layers(6, 4) == [(1, 0), (2, 1), (4, 2), (5, 3)]
    assert paired_layers(6, 2) == [(2, 0), (5, 1)]
