"""Paired Δ statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from kdlab.analysis.stats import paired_delta

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)


def test_three_seeds():
    result = paired_delta([0.01, 0.02, 0.03])
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert (result.n, result.mean, result.sd) == (3, pytest.approx(0.02), pytest.approx(0.01))
    assert result.low == pytest.approx(0.02 - half) and result.high == pytest.approx(0.02 + half)
    assert not result.positive  # the interval reaches below 0


def test_positive_at_95():
    result = paired_delta([0.020, 0.021, 0.022])
    assert result.low == pytest.approx(0.021 - T_975_2 * 0.001 / math.sqrt(3))
    assert result.positive


def test_one_seed_has_no_interval():
    result = paired_delta([0.5])
    assert result.mean == 0.5 and math.isnan(result.low) and not result.positive
    assert paired_delta([]).n == 0
