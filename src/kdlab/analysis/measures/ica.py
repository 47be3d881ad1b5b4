"""Shared independent components (kdlab.analysis.ica): ica/<layer> = the mean |correlation| of
teacher and student FastICA components matched one to one."""

from __future__ import annotations

import logging

from kdlab.analysis.ica import ica_match
from kdlab.analysis.measures import Inputs, Output, register_measure

log = logging.getLogger(__name__)


@register_measure("ica", "pair")
def ica(inputs: Inputs, layer: str) -> Output:
    log.info("ICA on %s (%d components)", layer, inputs.cfg.ica_components)
    teacher, student = (inputs.acts[role, layer].cpu().numpy() for role in ("teacher", "student"))
    return Output({f"ica/{layer}": ica_match(teacher, student, inputs.cfg.ica_components,
                                             inputs.seed)})  # fmt: skip
