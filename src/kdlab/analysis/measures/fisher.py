"""Class separability of each layer (kdlab.analysis.separability): fisher/<role>/<layer> =
trace(S_B) / trace(S_W) on the test labels."""

from __future__ import annotations

from kdlab.analysis.measures import Inputs, Output, register_measure
from kdlab.analysis.separability import fisher_criterion


@register_measure("fisher", "layer")
def fisher(inputs: Inputs, role: str, layer: str) -> Output:
    return Output({f"fisher/{role}/{layer}": fisher_criterion(inputs.acts[role, layer],
                                                              inputs.labels)})  # fmt: skip
