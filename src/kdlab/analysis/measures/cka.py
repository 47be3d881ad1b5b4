"""Linear CKA (kdlab.analysis.similarity): every teacher layer against every student layer
(cka/<layer> for the shared ones, the matrix as a heatmap), and the final teacher against the
student at each milestone (cka_by_epoch, `cka_over_training.png`)."""

from __future__ import annotations

import logging
import re

from kdlab.analysis import plots
from kdlab.analysis.measures import Inputs, Output, as_tensor, register_measure
from kdlab.analysis.similarity import cka_from_grams, cka_matrix, gram_linear

log = logging.getLogger(__name__)


@register_measure("cka", "run")
def cka(inputs: Inputs) -> Output:
    t_layers, s_layers = inputs.layers("teacher"), inputs.layers("student")
    if not s_layers:  # a study of one model: nothing to compare it with
        return Output()
    log.info("CKA: %d teacher × %d student layers", len(t_layers), len(s_layers))
    t_names, s_names, matrix = cka_matrix(
        {layer: inputs.acts["teacher", layer] for layer in t_layers},
        {layer: inputs.acts["student", layer] for layer in s_layers},
        debiased=inputs.cfg.debiased_cka,
    )  # fmt: skip
    metrics = {f"cka/{layer}": matrix[t_names.index(layer)][s_names.index(layer)]
               for layer in inputs.shared}  # fmt: skip
    rows = [{"teacher_layer": t, "student_layer": s, "cka": matrix[i][j]}
            for i, t in enumerate(t_names) for j, s in enumerate(s_names)]  # fmt: skip
    return Output(metrics, {"cka_matrix": rows}, {"cka_heatmap": ("cka_matrix", plots.cka_heatmap)})


@register_measure("cka_over_training", "run")
def cka_over_training(inputs: Inputs) -> Output:
    """CKA of the final teacher with the student at each milestone (and at the end)."""
    cache, layers = inputs.cache, inputs.shared
    if "student" not in cache.models():  # a study of one model
        return Output()
    grams_t = {layer: gram_linear(inputs.acts["teacher", layer]) for layer in layers}
    names = [m for m in cache.models() if re.fullmatch(r"student@epoch_\d+", m)] + ["student"]
    final_epoch = int(cache.meta["models"]["student"].get("epoch", 0))
    rows = []
    for name in names:
        row = {"epoch": int(name.split("_")[-1]) if "@" in name else final_epoch}
        for layer in layers:
            gram_s = gram_linear(as_tensor(cache.get(name, layer), inputs.device))
            row[layer] = cka_from_grams(grams_t[layer], gram_s, inputs.cfg.debiased_cka)
        rows.append(row)
    rows.sort(key=lambda r: r["epoch"])
    # Without milestones there is nothing to draw over time.
    figures = {"cka_over_training": ("cka_by_epoch", plots.cka_over_training)}
    return Output(plots={"cka_by_epoch": rows}, figures=figures if len(rows) >= 2 else {})
