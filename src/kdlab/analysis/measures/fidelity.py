"""Teacher–student agreement and calibration on the whole test split (kdlab.analysis.fidelity):
fidelity/top1_agreement, fidelity/kl_teacher_student, calibration/ece/<role>."""

from __future__ import annotations

import logging

from kdlab.analysis.fidelity import fidelity_metrics
from kdlab.analysis.measures import Inputs, Output, register_measure

log = logging.getLogger(__name__)


@register_measure("fidelity", "run")
def fidelity(inputs: Inputs) -> Output:
    cache = inputs.cache
    if "student" not in cache.models():  # a study of one model: no agreement to measure
        return Output()
    metrics = fidelity_metrics(cache.test_logits("teacher"), cache.test_logits("student"),
                               cache.test_labels())  # fmt: skip
    agreement, kl = metrics["fidelity/top1_agreement"], metrics["fidelity/kl_teacher_student"]
    log.info("fidelity: top-1 agreement %.4f, KL(T‖S) %.4f", agreement, kl)
    return Output(metrics)
