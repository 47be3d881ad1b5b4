"""Effective dimensionality, Fisher criterion, ICA matching and sparse autoencoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.analysis.dimensionality import entropy_effective_rank, participation_ratio, pca_spectrum
from kdlab.analysis.ica import ica_match
from kdlab.analysis.sae import SAEConfig, dictionary_match, sae_stats, train_sae
from kdlab.analysis.separability import fisher_criterion


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_effective_dimension_of_isotropic_data_is_d():
    x = torch.randn(20_000, 16, generator=gen(), dtype=torch.float64)
    spectrum = pca_spectrum(x)
    assert participation_ratio(spectrum) == pytest.approx(16, rel=0.03)
    assert entropy_effective_rank(spectrum) == pytest.approx(16, rel=0.01)


def test_effective_dimension_of_rank_k_data_is_k():
    latent = torch.randn(20_000, 5, generator=gen(1), dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(40, 5, generator=gen(2), dtype=torch.float64))
    x = latent @ basis.T  # rank 5, spread evenly over 5 orthonormal directions in R^40
    spectrum = pca_spectrum(x)
    assert participation_ratio(spectrum) == pytest.approx(5, rel=0.03)
    assert entropy_effective_rank(spectrum) == pytest.approx(5, rel=0.01)
    assert spectrum[5:].abs().max() < 1e-20 * spectrum[0] + 1e-12


def test_fisher_criterion_larger_for_separated_classes():
    labels = torch.arange(3).repeat_interleave(200)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    noise = torch.randn(600, 2, generator=gen(), dtype=torch.float64)
    separated = fisher_criterion(10 * centres[labels] + noise, labels)
    overlapping = fisher_criterion(0.3 * centres[labels] + noise, labels)
    assert separated > 20 * overlapping
    # Exact value for a hand-checkable case: two points per class.
    x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    y = torch.tensor([0, 0, 1, 1])
    # S_B = 2·(1 − 6)² + 2·(11 − 6)² = 100;  S_W = 4·1² = 4.
    assert fisher_criterion(x, y) == pytest.approx(25.0)


def test_ica_recovers_known_mixed_sources():
    rng = np.random.default_rng(0)
    n = 3000
    square_wave = np.sign(np.sin(np.arange(n) / 7.0))
    sources = np.column_stack(
        [rng.laplace(size=n), rng.uniform(-1, 1, n), square_wave, rng.exponential(size=n) - 1]
    )
    mixed_a = sources @ rng.normal(size=(4, 6))  # two different linear views of the same sources
    mixed_b = sources @ rng.normal(size=(4, 8))
    assert ica_match(mixed_a, mixed_b, n_components=4, seed=0) > 0.95
    unrelated = rng.laplace(size=(n, 4)) @ rng.normal(size=(4, 8))
    assert ica_match(mixed_a, unrelated, n_components=4, seed=0) < 0.3


def sparse_data(n=6000, atoms=24, dim=12, active=2, seed=0):
    g = gen(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, dim, generator=g), dim=1)
    codes = torch.zeros(n, atoms)
    idx = torch.rand(n, atoms, generator=g).argsort(dim=1)[:, :active]
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) * 2 + 0.5)
    return codes @ dictionary


def test_sae_reconstructs_sparse_data_with_unit_norm_decoder():
    x = sparse_data()
    cfg = SAEConfig(expansion=4, l1=3e-3, epochs=15, batch_size=256)
    sae, scale = train_sae(x, cfg, seed=0)
    stats, codes = sae_stats(sae, x, scale, cfg.dense_threshold)
    assert stats["r2"] > 0.9, stats
    assert 0 < stats["l0"] < 0.5 * sae.w_dec.shape[1], stats
    assert 0.0 <= stats["dead_frac"] < 1.0 and 0.0 <= stats["dense_frac"] <= 1.0
    norms = sae.w_dec.norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert codes.shape == (len(x), sae.w_dec.shape[1])


def test_sae_is_seeded():
    x = sparse_data(n=1000)
    cfg = SAEConfig(expansion=4, l1=1e-3, epochs=2, batch_size=256)
    a, _ = train_sae(x, cfg, seed=3)
    b, _ = train_sae(x, cfg, seed=3)
    c, _ = train_sae(x, cfg, seed=4)
    assert torch.equal(a.w_dec, b.w_dec) and not torch.equal(a.w_dec, c.w_dec)


def test_dictionary_match_is_one_for_the_same_codes_and_lower_for_shuffled():
    codes = torch.relu(torch.randn(500, 30, generator=gen()))
    assert dictionary_match(codes, codes[:, torch.randperm(30, generator=gen(1))]) == pytest.approx(
        1.0
    )
    shuffled = codes[torch.randperm(500, generator=gen(2))]
    assert dictionary_match(codes, shuffled) < 0.9
