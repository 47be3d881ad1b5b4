"""The per-layer summary (`layers.png`, plot rows `layers`): CKA, effective dimensionality and
Fisher criterion of each shared layer side by side; reads the metrics of the measures before."""

from __future__ import annotations

from kdlab.analysis import plots
from kdlab.analysis.measures import Inputs, Output, register_measure


@register_measure("layers", "run", order=1)
def layers(inputs: Inputs) -> Output:
    m = inputs.metrics
    if not inputs.shared:  # a study of one model: no teacher–student comparison
        return Output()
    rows = [{"layer": layer, "cka": m[f"cka/{layer}"],
             **{f"{name}_{role}": m[f"{name}/{role}/{layer}"] for name in ("effdim", "fisher")
                for role in ("teacher", "student")}}
            for layer in inputs.shared]  # fmt: skip
    return Output(plots={"layers": rows}, figures={"layers": ("layers", plots.layer_bars)})
