"""Effective dimensionality of each layer (kdlab.analysis.dimensionality): the participation
ratio effdim/<role>/<layer>, the entropy effective rank effdim_entropy/<role>/<layer>, and the
PCA spectrum (pca_spectra: the first SPECTRUM_COMPONENTS explained-variance ratios)."""

from __future__ import annotations

from kdlab.analysis import plots
from kdlab.analysis.dimensionality import entropy_effective_rank, participation_ratio, pca_spectrum
from kdlab.analysis.measures import Inputs, Output, register_measure

SPECTRUM_COMPONENTS = 64


@register_measure("spectrum", "layer")
def spectrum(inputs: Inputs, role: str, layer: str) -> Output:
    values = pca_spectrum(inputs.acts[role, layer])
    metrics = {f"effdim/{role}/{layer}": participation_ratio(values),
               f"effdim_entropy/{role}/{layer}": entropy_effective_rank(values)}  # fmt: skip
    ratios = (values / values.sum())[:SPECTRUM_COMPONENTS].tolist()
    rows = [{"component": i + 1, "series": f"{role}/{layer}", "explained": r}
            for i, r in enumerate(ratios)]  # fmt: skip
    return Output(
        metrics, {"pca_spectra": rows}, {"pca_spectra": ("pca_spectra", plots.pca_spectra)}
    )
