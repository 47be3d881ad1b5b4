"""Independent components of teacher and student, matched one to one.

FastICA (scikit-learn, Hyvärinen & Oja 2000) extracts k components from each network's
activations on the same samples; components are matched by |Pearson correlation| of their
source signals with the Hungarian algorithm, and the mean matched |correlation| says how many of
the teacher's independent directions the student also carries.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment


def ica_sources(
    acts_nd: np.ndarray, n_components: int, seed: int, max_iter: int = 400
) -> np.ndarray:
    """(n, d) -> (n, k) estimated sources, k = min(n_components, d)."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    x_nd = np.asarray(acts_nd, dtype=np.float64).reshape(len(acts_nd), -1)
    k = min(n_components, x_nd.shape[1], len(x_nd) - 1)
    ica = FastICA(n_components=k, whiten="unit-variance", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported via the match, not spam
        return ica.fit_transform(x_nd)


def matched_correlation(sources_a: np.ndarray, sources_b: np.ndarray) -> float:
    """Mean |corr| over the one-to-one (Hungarian) matching of the two sets of sources."""
    k_a = sources_a.shape[1]
    corr = np.corrcoef(sources_a.T, sources_b.T)[:k_a, k_a:]  # (k_a, k_b)
    corr = np.nan_to_num(np.abs(corr))
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].mean())


def ica_match(acts_a: np.ndarray, acts_b: np.ndarray, n_components: int, seed: int) -> float:
    """FastICA on both, then the mean matched |correlation| of their components."""
    return matched_correlation(
        ica_sources(acts_a, n_components, seed), ica_sources(acts_b, n_components, seed)
    )
