"""Sequence attention measures: constructed maps with known values, invariance to padding, and
each vectorised measure against a slow per-sample loop over the valid frames only."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from kdlab.analysis.sequence_attention import (
    edge_mass,
    head_entropy,
    head_similarity,
    mean_distance,
    milestone_change,
    normalized_head_entropy,
    read_position,
    time_profile,
    valid_keys,
    valid_queries,
)
from kdlab.analysis.sequence_plots import cross_attention_over_time, heads_by_milestone

F64 = torch.float64
LENGTHS = torch.tensor([1, 2, 5, 7, 9, 12], dtype=torch.int64)
T_MAX = 12
HEADS = 3


def random_attention(lengths, t_max, heads=HEADS, q=None, seed=0, garbage=0.0):
    """(N, H, Q, t_max) softmax over each sample's valid keys; padded keys exactly 0; rows of
    padded queries filled with `garbage` (or random values when garbage is None)."""
    g = torch.Generator().manual_seed(seed)
    n = len(lengths)
    q = t_max if q is None else q
    logits = 3.0 * torch.randn(n, heads, q, t_max, generator=g, dtype=F64)
    keys = valid_keys(lengths, t_max)[:, None, None, :]
    a = torch.softmax(logits.masked_fill(~keys, -math.inf), -1)
    queries = valid_queries(lengths, q)[:, None, :, None]
    fill = torch.rand(a.shape, generator=g, dtype=F64) * 5 if garbage is None else garbage
    return torch.where(queries, a, torch.as_tensor(fill, dtype=F64))


def repad(attn, lengths, t_new, seed=1, key_fill=None, query_fill=None):
    """The same valid blocks in a (N, H, Q', t_new) array with other values outside them."""
    g = torch.Generator().manual_seed(seed)
    n, h, q, _ = attn.shape
    q_new = 1 if q == 1 else t_new
    out = torch.rand(n, h, q_new, t_new, generator=g, dtype=F64) * 7 - 1
    if query_fill is not None:
        out.fill_(query_fill)
    for i, length in enumerate(lengths.tolist()):
        rows = 1 if q == 1 else length
        out[i, :, :rows, :] = 0.0 if key_fill is None else key_fill
        out[i, :, :rows, :length] = attn[i, :, :rows, :length]
    return out


def measures_self(a, lengths):
    first, last = edge_mass(a, lengths, frames=2)
    return {
        "entropy": head_entropy(a, lengths),
        "normalized": normalized_head_entropy(a, lengths),
        "distance": mean_distance(a, lengths),
        "first": first,
        "last": last,
        "similarity": head_similarity(a, lengths),
        "change": milestone_change(a, a.flip(1), lengths),
    }


def measures_cross(a, lengths):
    first, last = edge_mass(a, lengths, frames=3)
    return {
        "entropy": head_entropy(a, lengths),
        "normalized": normalized_head_entropy(a, lengths),
        "read": read_position(a, lengths),
        "first": first,
        "last": last,
        "similarity": head_similarity(a, lengths),
        "change": milestone_change(a, a.flip(1), lengths),
        "profile": time_profile(a, lengths, bins=7),
    }


def assert_same(x: dict, y: dict, atol=1e-12):
    assert x.keys() == y.keys()
    for name in x:
        torch.testing.assert_close(x[name], y[name], atol=atol, rtol=0, msg=name)


# ---- masks -----------------------------------------------------------------------------------


def test_masks():
    lengths = torch.tensor([1, 3])
    assert valid_keys(lengths, 4).tolist() == [[True, False, False, False],
                                               [True, True, True, False]]  # fmt: skip
    assert valid_queries(lengths, 4).tolist() == valid_keys(lengths, 4).tolist()
    assert valid_queries(lengths, 1).tolist() == [[True], [True]]


# ---- constructed maps ------------------------------------------------------------------------


def uniform_self(lengths, t_max, heads=2):
    keys = valid_keys(lengths, t_max).to(F64)
    a = keys / keys.sum(-1, keepdim=True)
    return a[:, None, None, :].expand(-1, heads, t_max, -1).clone()


def test_uniform_attention_has_entropy_mean_log_length_and_normalised_one():
    lengths = torch.tensor([2, 3, 8])
    a = uniform_self(lengths, 8)
    # pooled over valid queries: a sample of length L brings L queries each of entropy ln L
    expected = sum(length * math.log(length) for length in (2, 3, 8)) / (2 + 3 + 8)
    assert head_entropy(a, lengths).tolist() == pytest.approx([expected] * 2, abs=1e-12)
    assert normalized_head_entropy(a, lengths).tolist() == pytest.approx([1.0] * 2, abs=1e-12)
    cross = a[:, :, :1]  # one query: the plain mean over samples
    expected = (math.log(2) + math.log(3) + math.log(8)) / 3
    assert head_entropy(cross, lengths).tolist() == pytest.approx([expected] * 2, abs=1e-12)
    assert normalized_head_entropy(cross, lengths).tolist() == pytest.approx([1.0] * 2)


def test_normalised_entropy_of_a_single_frame_is_zero():
    lengths = torch.tensor([1, 1])
    a = uniform_self(lengths, 4)
    assert normalized_head_entropy(a, lengths).tolist() == [0.0, 0.0]
    assert head_entropy(a, lengths).tolist() == [0.0, 0.0]


def test_one_hot_diagonal_has_zero_distance_and_zero_entropy():
    lengths = torch.tensor([3, 6])
    a = torch.eye(6, dtype=F64).expand(2, 2, 6, 6).clone()
    a[0, :, 3:] = 0.25  # padded queries of sample 0: arbitrary
    assert mean_distance(a, lengths).tolist() == [0.0, 0.0]
    assert head_entropy(a, lengths).tolist() == [0.0, 0.0]
    assert normalized_head_entropy(a, lengths).tolist() == [0.0, 0.0]


def test_one_hot_on_key_zero_has_distance_mean_query():
    lengths = torch.tensor([3, 6])
    a = torch.zeros(2, 1, 6, 6, dtype=F64)
    a[:, :, :, 0] = 1.0
    queries = [0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert mean_distance(a, lengths).item() == pytest.approx(sum(queries) / len(queries))


def test_mean_distance_refuses_cross_attention():
    with pytest.raises(ValueError, match="self-attention"):
        mean_distance(torch.ones(1, 1, 1, 3, dtype=F64) / 3, torch.tensor([3]))


def test_read_position_of_last_and_first_frame():
    lengths = torch.tensor([1, 2, 5, 9])
    last = torch.zeros(4, 2, 1, 9, dtype=F64)
    first = torch.zeros_like(last)
    first[:, :, 0, 0] = 1.0
    for i, length in enumerate(lengths.tolist()):
        last[i, :, 0, length - 1] = 1.0
    # L = 1 reads at 0.5 by definition: leave it out of the "last → 1, first → 0" check
    assert read_position(last[1:], lengths[1:]).tolist() == [1.0, 1.0]
    assert read_position(first[1:], lengths[1:]).tolist() == [0.0, 0.0]
    assert read_position(first[:1], lengths[:1]).tolist() == [0.5, 0.5]
    assert read_position(last, lengths).tolist() == pytest.approx([(0.5 + 3) / 4] * 2)


def test_read_position_of_uniform_attention_is_one_half():
    lengths = torch.tensor([1, 4, 7])
    a = uniform_self(lengths, 7)[:, :, :1]
    assert read_position(a, lengths).tolist() == pytest.approx([0.5, 0.5], abs=1e-12)


def test_read_position_refuses_self_attention():
    with pytest.raises(ValueError, match="cross-attention"):
        read_position(uniform_self(torch.tensor([3]), 3), torch.tensor([3]))


def test_edge_mass_windows():
    lengths = torch.tensor([1, 2, 6])
    a = uniform_self(lengths, 6)[:, :1, :1]  # cross-attention, uniform over L
    first, last = edge_mass(a, lengths, frames=2)
    # L = 1, 2: the window is the whole sample; L = 6: 2 of 6 frames
    assert first.item() == pytest.approx((1 + 1 + 2 / 6) / 3)
    assert last.item() == pytest.approx((1 + 1 + 2 / 6) / 3)
    one_hot = torch.zeros(3, 1, 1, 6, dtype=F64)
    for i, length in enumerate(lengths.tolist()):
        one_hot[i, 0, 0, length - 1] = 1.0
    first, last = edge_mass(one_hot, lengths, frames=1)
    assert last.item() == pytest.approx(1.0)
    assert first.item() == pytest.approx(1 / 3)  # only the sample with L = 1
    with pytest.raises(ValueError):
        edge_mass(a, lengths, frames=0)


def test_head_similarity_symmetric_unit_diagonal_below_one_for_different_heads():
    a = random_attention(LENGTHS, T_MAX, heads=4, seed=3, garbage=None)
    s = head_similarity(a, LENGTHS)
    assert s.shape == (4, 4)
    torch.testing.assert_close(s, s.T, atol=0, rtol=0)
    assert torch.diagonal(s).tolist() == [1.0] * 4
    off = s[~torch.eye(4, dtype=torch.bool)]
    assert (off < 1).all() and (off >= 0).all()
    disjoint = torch.zeros(1, 2, 1, 4, dtype=F64)
    disjoint[0, 0, 0, 0] = disjoint[0, 1, 0, 3] = 1.0
    assert head_similarity(disjoint, torch.tensor([4]))[0, 1].item() == pytest.approx(0.0)


def test_milestone_change_zero_for_identical_positive_otherwise_and_symmetric():
    a = random_attention(LENGTHS, T_MAX, seed=4, garbage=None)
    b = random_attention(LENGTHS, T_MAX, seed=5, garbage=None)
    assert milestone_change(a, a.clone(), LENGTHS).tolist() == [0.0] * HEADS
    change = milestone_change(a, b, LENGTHS)
    assert (change > 0).all() and (change <= math.log(2)).all()
    torch.testing.assert_close(change, milestone_change(b, a, LENGTHS), atol=1e-15, rtol=0)
    # different only in the padding: no change
    assert milestone_change(a, repad(a, LENGTHS, T_MAX), LENGTHS).tolist() == [0.0] * HEADS


def test_time_profile_rows_sum_to_one():
    a = random_attention(LENGTHS, T_MAX, q=1, seed=6)
    for bins in (1, 5, 20):
        profile = time_profile(a, LENGTHS, bins=bins)
        assert profile.shape == (len(LENGTHS), HEADS, bins)
        torch.testing.assert_close(profile.sum(-1), torch.ones(len(LENGTHS), HEADS, dtype=F64))
        assert (profile >= 0).all()


@pytest.mark.parametrize("bins", [1, 4, 20])
def test_time_profile_last_and_first_frame_land_in_last_and_first_bin(bins):
    lengths = torch.arange(1, 3 * bins + 2)
    t_max = int(lengths.max())
    last = torch.zeros(len(lengths), 1, 1, t_max, dtype=F64)
    first = torch.zeros_like(last)
    first[:, 0, 0, 0] = 1.0
    for i, length in enumerate(lengths.tolist()):
        last[i, 0, 0, length - 1] = 1.0
    p_last = time_profile(last, lengths, bins)[:, 0]
    p_first = time_profile(first, lengths, bins)[:, 0]
    for i, length in enumerate(lengths.tolist()):
        # the frame's span [(L-1)/L, 1) covers the last ⌈B/L⌉ bins: its mass lies there, the last
        # bin gets the largest share, and all of it once L ≥ B
        reach = math.ceil(bins / length)
        assert p_last[i, -1] > 0 and p_last[i, -1] == p_last[i].max()
        assert p_last[i, -reach:].sum().item() == pytest.approx(1.0)
        assert p_first[i, :reach].sum().item() == pytest.approx(1.0)
        assert p_first[i, 0] == p_first[i].max()
        if length >= bins:
            assert p_last[i, -1].item() == pytest.approx(1.0)
            assert p_first[i, 0].item() == pytest.approx(1.0)


def test_time_profile_is_the_centre_bin_rule_when_lengths_are_multiples_of_bins():
    lengths = torch.tensor([5, 10, 15, 20])
    a = random_attention(lengths, 20, q=1, seed=7)
    profile = time_profile(a, lengths, bins=5)
    for i, length in enumerate(lengths.tolist()):
        expected = torch.zeros(HEADS, 5, dtype=F64)
        for k in range(length):
            expected[:, int((k + 0.5) / length * 5)] += a[i, :, 0, k]
        torch.testing.assert_close(profile[i], expected, atol=1e-12, rtol=0)


# ---- padding never matters -------------------------------------------------------------------


def test_values_outside_the_valid_block_change_nothing():
    a = random_attention(LENGTHS, T_MAX, seed=8, garbage=0.0)
    reference = measures_self(a, LENGTHS)
    for fill in (None, 3.0, math.nan, math.inf):
        other = repad(a, LENGTHS, T_MAX, key_fill=fill, query_fill=fill)
        assert_same(measures_self(other, LENGTHS), reference)
    cross = random_attention(LENGTHS, T_MAX, q=1, seed=9)
    reference = measures_cross(cross, LENGTHS)
    for fill in (None, 3.0, math.nan):
        other = repad(cross, LENGTHS, T_MAX, key_fill=fill, query_fill=fill)
        assert_same(measures_cross(other, LENGTHS), reference)


def test_padding_to_a_larger_t_max_gives_the_same_results():
    a = random_attention(LENGTHS, T_MAX, seed=10, garbage=None)
    wide = repad(a, LENGTHS, T_MAX + 9)
    assert_same(measures_self(wide, LENGTHS), measures_self(a, LENGTHS))
    cross = random_attention(LENGTHS, T_MAX, q=1, seed=11)
    wide = repad(cross, LENGTHS, T_MAX + 9)
    assert_same(measures_cross(wide, LENGTHS), measures_cross(cross, LENGTHS))


def test_each_sample_alone_at_its_own_length_gives_its_share():
    """Cross-attention: the batch mean is the mean of each sample measured alone, unpadded."""
    cross = random_attention(LENGTHS, T_MAX, q=1, seed=12)
    alone = []
    for i, length in enumerate(LENGTHS.tolist()):
        one = cross[i : i + 1, :, :, :length]
        alone.append(measures_cross(one, LENGTHS[i : i + 1]))
    batch = measures_cross(cross, LENGTHS)
    for name in ("entropy", "normalized", "read", "first", "last", "similarity", "change"):
        mean = torch.stack([m[name] for m in alone]).mean(0)
        torch.testing.assert_close(batch[name], mean, atol=1e-12, rtol=0, msg=name)
    profiles = torch.cat([m["profile"] for m in alone])
    torch.testing.assert_close(batch["profile"], profiles, atol=1e-12, rtol=0)


def test_refuses_bad_lengths_and_shapes():
    a = uniform_self(torch.tensor([3]), 3)
    with pytest.raises(ValueError):
        head_entropy(a, torch.tensor([0]))
    with pytest.raises(ValueError):
        head_entropy(a, torch.tensor([4]))
    with pytest.raises(ValueError):
        head_entropy(a, torch.tensor([3, 3]))
    with pytest.raises(ValueError):
        milestone_change(a, a[:, :1], torch.tensor([3]))


# ---- against a slow reference over the valid frames of each sample ---------------------------


def valid_block(a: np.ndarray, i: int, length: int) -> np.ndarray:
    """(H, Q_valid, L) sample i's valid queries and keys."""
    rows = 1 if a.shape[2] == 1 else length
    return a[i, :, :rows, :length]


def ref_entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def ref_js(p, q):
    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    kl = lambda u: sum(x * math.log(x / z) for x, z in zip(u, m, strict=True) if x > 0)  # noqa: E731
    return 0.5 * (kl(p) + kl(q))


def reference(a_t: torch.Tensor, lengths_t: torch.Tensor, b_t: torch.Tensor, bins: int = 7):
    """Every measure by loops over samples, heads, valid queries and valid keys."""
    a, b, lengths = a_t.numpy(), b_t.numpy(), lengths_t.tolist()
    heads, cross = a.shape[1], a.shape[2] == 1
    sums = {name: np.zeros(heads) for name in ("entropy", "normalized", "distance", "read",
                                                "first", "last", "change")}  # fmt: skip
    similarity = np.zeros((heads, heads))
    profile = np.zeros((len(lengths), heads, bins))
    count = 0
    for i, length in enumerate(lengths):
        block, other = valid_block(a, i, length), valid_block(b, i, length)
        window = min(2, length)
        for q in range(block.shape[1]):
            count += 1
            for h in range(heads):
                p = list(block[h, q])
                sums["entropy"][h] += ref_entropy(p)
                sums["normalized"][h] += ref_entropy(p) / math.log(length) if length > 1 else 0.0
                sums["distance"][h] += sum(x * abs(q - k) for k, x in enumerate(p))
                sums["first"][h] += sum(p[:window])
                sums["last"][h] += sum(p[length - window :])
                sums["change"][h] += ref_js(p, list(other[h, q]))
                for j in range(heads):
                    similarity[h, j] += 1 - ref_js(p, list(block[j, q])) / math.log(2)
                if cross:
                    sums["read"][h] += sum(x * (k / (length - 1) if length > 1 else 0.5)
                                           for k, x in enumerate(p))  # fmt: skip
                    for k, x in enumerate(p):  # frame k spans [k/L, (k+1)/L)
                        for bin_ in range(bins):
                            lo = max(k / length, bin_ / bins)
                            hi = min((k + 1) / length, (bin_ + 1) / bins)
                            profile[i, h, bin_] += x * max(0.0, hi - lo) * length
    out = {name: torch.from_numpy(value / count) for name, value in sums.items()}
    out["similarity"] = torch.from_numpy(similarity / count)
    out["profile"] = torch.from_numpy(profile)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_attention_measures_match_the_slow_reference(seed):
    g = torch.Generator().manual_seed(100 + seed)
    lengths = torch.randint(1, 10, (5,), generator=g)
    a = random_attention(lengths, 10, seed=seed, garbage=None)
    b = random_attention(lengths, 10, seed=seed + 50, garbage=None)
    ref = reference(a, lengths, b)
    first, last = edge_mass(a, lengths, frames=2)
    got = {
        "entropy": head_entropy(a, lengths),
        "normalized": normalized_head_entropy(a, lengths),
        "distance": mean_distance(a, lengths),
        "first": first,
        "last": last,
        "change": milestone_change(a, b, lengths),
        "similarity": head_similarity(a, lengths),
    }
    for name, value in got.items():
        torch.testing.assert_close(value, ref[name], atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_attention_measures_match_the_slow_reference(seed):
    g = torch.Generator().manual_seed(200 + seed)
    lengths = torch.randint(1, 16, (6,), generator=g)
    lengths[0] = 1
    a = random_attention(lengths, 16, q=1, seed=seed)
    b = random_attention(lengths, 16, q=1, seed=seed + 50)
    ref = reference(a, lengths, b)
    first, last = edge_mass(a, lengths, frames=2)
    got = {
        "entropy": head_entropy(a, lengths),
        "normalized": normalized_head_entropy(a, lengths),
        "read": read_position(a, lengths),
        "first": first,
        "last": last,
        "change": milestone_change(a, b, lengths),
        "similarity": head_similarity(a, lengths),
        "profile": time_profile(a, lengths, bins=7),
    }
    for name, value in got.items():
        torch.testing.assert_close(value, ref[name], atol=1e-10, rtol=0, msg=name)


def test_float32_input_gives_float64_output():
    a = random_attention(LENGTHS, T_MAX, seed=13).to(torch.float32)
    assert head_entropy(a, LENGTHS).dtype == F64
    assert time_profile(a[:, :, :1], LENGTHS).dtype == F64


# ---- figures ---------------------------------------------------------------------------------


def profile_rows(samples=2, heads=3, bins=20, modules=("decoder.layer0", "decoder.layer1")):
    rows = []
    g = torch.Generator().manual_seed(0)
    for module in modules:
        for sample in range(samples):
            for head in range(heads):
                weights = torch.softmax(torch.randn(bins, generator=g, dtype=F64) * 2, 0)
                for b in range(bins):
                    rows.append({"sample": sample, "class": f"sign_{sample * 7}",
                                 "module": module, "head": head, "time": (b + 0.5) / bins,
                                 "weight": weights[b].item()})  # fmt: skip
    return rows


def milestone_rows(modules=("encoder.layer0", "decoder.layer0"), heads=3, epochs=(5, 10, 20)):
    g = torch.Generator().manual_seed(1)
    return [{"epoch": epoch, "module": module, "head": head,
             "entropy": torch.rand(1, generator=g).item() * 3, "read_position": 0.5}
            for module in modules for head in range(heads) for epoch in epochs]  # fmt: skip


def assert_sensible_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image.reshape(-1, image.shape[-1]).std(0).max() > 0.01  # not all one colour


def test_cross_attention_over_time_renders(tmp_path):
    path = tmp_path / "cross_attention_over_time.png"
    cross_attention_over_time(profile_rows(), path)
    assert_sensible_png(path)


def test_cross_attention_over_time_many_samples_renders(tmp_path):
    path = tmp_path / "many.png"
    cross_attention_over_time(profile_rows(samples=9, heads=8, modules=("decoder",)), path)
    assert_sensible_png(path)


def test_heads_by_milestone_renders(tmp_path):
    path = tmp_path / "heads_by_milestone.png"
    heads_by_milestone("entropy", "attention entropy (nats)")(milestone_rows(), path)
    assert_sensible_png(path)


def test_heads_by_milestone_many_heads_and_modules_render(tmp_path):
    path = tmp_path / "big.png"
    rows = milestone_rows(modules=[f"encoder.layer{i}" for i in range(6)], heads=16,
                          epochs=tuple(range(0, 100, 10)))  # fmt: skip
    heads_by_milestone("entropy", "attention entropy (nats)")(rows, path)
    assert_sensible_png(path)
