"""CKA: the properties the paper proves, and agreement between the implementations."""

from __future__ import annotations

import itertools

import pytest
import torch

from kdlab.analysis.similarity import cka_from_grams, cka_matrix, gram_linear

from .reference import debiased_cka, linear_cka


@pytest.fixture
def xy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 12, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(12, 9, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(
        60, 9, generator=gen, dtype=torch.float64
    )
    return x, y


def test_cka_with_itself_is_one(xy):
    x, _ = xy
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert debiased_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_symmetric(xy):
    x, y = xy
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert debiased_cka(x, y) == pytest.approx(debiased_cka(y, x), abs=1e-12)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(xy):
    x, y = xy
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert debiased_cka(x @ q * 0.2, y) == pytest.approx(debiased_cka(x, y), abs=1e-10)


def test_changed_by_a_general_invertible_linear_map(xy):
    x, y = xy
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(12, 12, generator=gen, dtype=torch.float64) + 3 * torch.eye(
        12, dtype=torch.float64
    )
    a[:, 0] *= 25.0  # strongly anisotropic
    assert torch.linalg.matrix_rank(a) == 12
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 1e-3


def test_gram_and_feature_forms_agree(xy):
    x, y = xy
    assert cka_from_grams(gram_linear(x), gram_linear(y)) == pytest.approx(
        linear_cka(x, y), abs=1e-12
    )


def naive_unbiased_hsic(k: list[list[float]], l: list[list[float]]) -> float:  # noqa: E741
    """Song et al. (2012), Theorem 2, written out with explicit index sums: O(n²)-O(n³)."""
    n = len(k)
    kt = [[0.0 if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l[i][j] for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(map(sum, kt))
    sum_l = sum(map(sum, lt))
    cross = sum(sum(kt[i][j] for i in range(n)) * sum(lt[j][m] for m in range(n)) for j in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


def test_debiased_estimator_matches_a_naive_reference():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(14, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(14, 4, generator=gen, dtype=torch.float64) + x[:, :4]
    k, l = gram_linear(x).tolist(), gram_linear(y).tolist()  # noqa: E741
    expected = (
        naive_unbiased_hsic(k, l) / (naive_unbiased_hsic(k, k) * naive_unbiased_hsic(l, l)) ** 0.5
    )
    assert debiased_cka(x, y) == pytest.approx(expected, abs=1e-10)


def test_cka_matrix_layers_and_values(xy):
    x, y = xy
    teacher = {"stage1": x, "stage2": y}
    student = {"stage1": y, "embedding": x[:, :3]}
    t_names, s_names, matrix = cka_matrix(teacher, student)
    assert (t_names, s_names) == (["stage1", "stage2"], ["stage1", "embedding"])
    for (i, t), (j, s) in itertools.product(
        enumerate(teacher.values()), enumerate(student.values())
    ):
        assert matrix[i][j] == pytest.approx(linear_cka(t, s), abs=1e-10)
    assert matrix[1][0] == pytest.approx(1.0)


def test_debiased_cka_matrix_uses_the_unbiased_estimator(xy):
    x, y = xy
    _, _, matrix = cka_matrix({"a": x}, {"a": x, "b": y}, debiased=True)
    assert matrix[0][0] == pytest.approx(1.0, abs=1e-12)
    assert matrix[0][1] == pytest.approx(debiased_cka(x, y), abs=1e-12)
    assert matrix[0][1] != pytest.approx(linear_cka(x, y), abs=1e-6)  # not the biased value
