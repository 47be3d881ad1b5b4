"""What the heads of a sequence transformer do with time (kdlab.analysis.sequence_attention),
for caches of a sequence dataset (SPOTER-shaped models); nothing for image caches.

Modules are named as in the model (`encoder.<i>.self_attn`, `decoder.<i>.cross_attn`); every
value is computed over each sample's valid frames only (the cache's lengths).

Metrics (means over the heads of a module, the final networks):
    seq_entropy/<role>/<module>    normalised entropy of a query's attention over the valid
                                   frames (1 = uniform, 0 = one frame)
    seq_distance/<role>/<module>   self-attention: mean |query − key| in frames
    seq_read/<role>/<module>       cross-attention: where in normalised time [0, 1] the class
                                   query reads (the attention-weighted mean frame / (L − 1))
    seq_edges/<role>/<module>      mass on the first and last valid frame together
Plot rows and figures: every head of every module at every milestone and at the end, with its
Jensen–Shannon change from the previous milestone (`sequence_heads`; heads × milestones
heatmaps per module, one figure per measure and role), head-to-head similarity of the final
networks (`sequence_head_similarity`), and the last decoder layer's cross-attention over
normalised time for case-study samples (`sequence_cross_attention`, `analyze.case_studies`).
"""

from __future__ import annotations

import re

import torch

from kdlab.analysis import sequence_attention as seq
from kdlab.analysis import sequence_plots
from kdlab.analysis.measures import Inputs, Output, as_tensor, register_measure
from kdlab.errors import DataError

CASE_STUDY_DEFAULT = 4
"""Classes whose first extracted sample is drawn when analyze.case_studies is empty."""
TIME_BINS = 20
BY_MILESTONE = {"normalized_entropy": "normalised attention entropy (1 = uniform)",
                "read_position": "where the class query reads (normalised time)",
                "distance": "mean attention distance (frames)",
                "change": "Jensen–Shannon change from the previous milestone (nats)"}  # fmt: skip
"""Head measures drawn as heads × milestones heatmaps, one figure each."""


def snapshots(inputs: Inputs, role: str) -> list[tuple[int, str]]:
    """(epoch, cache model name) of `role`'s milestones and its final network, by epoch."""
    cache = inputs.cache
    found = [(int(m.split("_")[-1]), m) for m in cache.models()
             if re.fullmatch(rf"{role}@epoch_\d+", m)]  # fmt: skip
    final = int(cache.meta["models"][role].get("epoch", 0))
    if all(epoch != final for epoch, _ in found):
        found.append((final, role))
    return sorted(found)


def module_maps(inputs: Inputs, model: str) -> dict[str, torch.Tensor]:
    """module name -> (N, heads, Q, T_max) float64 attention of `model`."""
    return {module: as_tensor(inputs.cache.get(model, f"attn/{module}"), inputs.device)
            for module in inputs.cache.attention_modules(model)}  # fmt: skip


def head_measures(a: torch.Tensor, lengths: torch.Tensor) -> dict[str, list]:
    """Per-head values of one module (None where a measure does not apply)."""
    heads = a.shape[1]
    first, last = seq.edge_mass(a, lengths)
    cross = a.shape[2] == 1
    return {
        "entropy": seq.head_entropy(a, lengths).tolist(),
        "normalized_entropy": seq.normalized_head_entropy(a, lengths).tolist(),
        "distance": [None] * heads if cross else seq.mean_distance(a, lengths).tolist(),
        "read_position": seq.read_position(a, lengths).tolist() if cross else [None] * heads,
        "first_mass": first.tolist(),
        "last_mass": last.tolist(),
    }


def role_rows(inputs: Inputs, role: str, lengths: torch.Tensor) -> tuple[list[dict], dict]:
    """Every head at every snapshot of `role` (with its change from the previous one), and
    the final network's maps."""
    rows, previous, maps = [], {}, {}
    for epoch, model in snapshots(inputs, role):
        maps = module_maps(inputs, model)
        for module, a in maps.items():
            values = head_measures(a, lengths)
            change = (seq.milestone_change(previous[module], a, lengths).tolist()
                      if module in previous else [None] * a.shape[1])  # fmt: skip
            rows += [{"role": role, "epoch": epoch, "module": module, "head": h,
                      **{k: v[h] for k, v in values.items()}, "change": change[h]}
                     for h in range(a.shape[1])]  # fmt: skip
        previous = maps
    return rows, maps


def final_metrics(role: str, rows: list[dict]) -> dict[str, float]:
    """Means over the heads of each module of the final network (the last epoch's rows)."""
    last = max(r["epoch"] for r in rows)
    metrics: dict[str, float] = {}
    for module in dict.fromkeys(r["module"] for r in rows):
        heads = [r for r in rows if r["module"] == module and r["epoch"] == last]
        mean = lambda key, heads=heads: sum(r[key] for r in heads) / len(heads)  # noqa: E731
        metrics[f"seq_entropy/{role}/{module}"] = mean("normalized_entropy")
        key, name = ("read_position", "seq_read") if heads[0]["distance"] is None else (
            "distance", "seq_distance")  # fmt: skip
        metrics[f"{name}/{role}/{module}"] = mean(key)
        metrics[f"seq_edges/{role}/{module}"] = mean("first_mass") + mean("last_mass")
    return metrics


def similarity_rows(role: str, maps: dict[str, torch.Tensor], lengths) -> list[dict]:
    rows = []
    for module, a in maps.items():
        matrix = seq.head_similarity(a, lengths).tolist()
        rows += [{"role": role, "module": module, "head_a": i, "head_b": j, "similarity": v}
                 for i, row in enumerate(matrix) for j, v in enumerate(row)]  # fmt: skip
    return rows


def case_study_samples(inputs: Inputs) -> list[tuple[int, str]]:
    """(sample position in the cache, class name) of each case study: the first extracted
    sample of each class in analyze.case_studies (or of the first classes present)."""
    classes = inputs.cache.meta.get("classes") or []
    labels = inputs.cache.labels.tolist()
    wanted = list(inputs.cfg.case_studies)
    for i, name in enumerate(wanted):
        if name not in classes:
            raise DataError(f"analyze.case_studies[{i}] {name!r} is not a class of this "
                            f"dataset: one of {', '.join(classes)}")  # fmt: skip
        if classes.index(name) not in labels:
            raise DataError(f"analyze.case_studies[{i}] {name!r} has no sample among the "
                            f"{len(labels)} extracted (raise extract.n_samples)")  # fmt: skip
    if not wanted:
        present = sorted(set(labels))[:CASE_STUDY_DEFAULT]
        wanted = [classes[c] if c < len(classes) else str(c) for c in present]
    return [(labels.index(classes.index(name) if name in classes else int(name)), name)
            for name in wanted]  # fmt: skip


def cross_attention_rows(inputs: Inputs, maps: dict[str, torch.Tensor], lengths) -> list[dict]:
    """The last decoder layer's class-query attention over normalised time, case studies."""
    cross = [module for module, a in maps.items() if a.shape[2] == 1]
    if not cross:
        return []
    module = cross[-1]
    samples = case_study_samples(inputs)
    chosen = torch.tensor([i for i, _ in samples], device=lengths.device)
    profile = seq.time_profile(maps[module][chosen], lengths[chosen], TIME_BINS)  # (S, H, bins)
    rows = []
    for s, (position, name) in enumerate(samples):
        for h in range(profile.shape[1]):
            rows += [{"sample": int(inputs.cache.indices[position]), "class": name,
                      "module": module, "head": h, "time": (b + 0.5) / TIME_BINS,
                      "weight": float(profile[s, h, b])} for b in range(TIME_BINS)]  # fmt: skip
    return rows


@register_measure("sequence_attention", "run")
def sequence_attention(inputs: Inputs) -> Output:
    cache = inputs.cache
    if cache.kind != "sequence":
        return Output()
    lengths = torch.from_numpy(cache.lengths).to(inputs.device)
    out = Output()
    heads, similarity = [], []
    for role in ("teacher", "student"):
        if role not in cache.models() or not cache.attention_modules(role):
            continue
        rows, maps = role_rows(inputs, role, lengths)
        heads += rows
        out.metrics |= final_metrics(role, rows)
        similarity += similarity_rows(role, maps, lengths)
        if role == "teacher":
            out.plots["sequence_cross_attention"] = cross_attention_rows(inputs, maps, lengths)
            out.figures["sequence_cross_attention"] = (
                "sequence_cross_attention",
                sequence_plots.cross_attention_over_time,
            )
        for measure, label in BY_MILESTONE.items():
            if any(r[measure] is not None for r in rows):
                out.plots[f"sequence_heads_{role}"] = rows
                draw = sequence_plots.heads_by_milestone(measure, f"{role}: {label}")
                out.figures[f"sequence_{measure}_by_epoch_{role}"] = (f"sequence_heads_{role}",
                                                                      draw)  # fmt: skip
    if heads:
        out.plots["sequence_heads"] = heads
        out.plots["sequence_head_similarity"] = similarity
    return out
