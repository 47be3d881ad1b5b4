"""What the attention heads of teacher and student do (kdlab.analysis.attention), for networks
with nn.MultiheadAttention (the ViTs); nothing for networks without. Layers are the attention
modules in network order, named block1, block2, ... like the ViT's stages.

Metrics (means over the heads of a layer):
    attn_entropy/<role>/<layer>    entropy of a query's attention over the keys, nats
    attn_distance/<role>/<layer>   mean attention distance between patches, in patches
    attn_cls/<role>/<layer>        the class token's attention on the patches
    attn_match/<layer>             the student layer's heads matched one to one with those of
                                   the teacher layer at the same relative depth: 1 − JS / ln 2
Plot rows and figures: every head's entropy and distance (`attention_heads`), the student's
per-layer entropy, distance, class-token attention and head match with the final teacher at
each milestone (`attention_by_epoch`, one figure each), and the attention rollout of a few fixed
test samples, teacher above student (`attention_rollout`).
"""

from __future__ import annotations

import re

import torch

from kdlab.analysis import attention as attn
from kdlab.analysis import plots
from kdlab.analysis.measures import Inputs, Output, as_tensor, register_measure

ROLLOUT_SAMPLES = 4
"""Fixed test samples (the first of the cache) whose rollout is drawn."""


def attention_maps(inputs: Inputs, model: str) -> dict[str, torch.Tensor]:
    """block<i> -> (N, heads, T, T) of `model`'s attention modules, in network order."""
    modules = inputs.cache.attention_modules(model)
    return {f"block{i + 1}": as_tensor(inputs.cache.get(model, f"attn/{module}"), inputs.device)
            for i, module in enumerate(modules)}  # fmt: skip


def head_rows(role: str, maps: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for layer, a in maps.items():
        per_head = zip(attn.attention_entropy(a).tolist(), attn.mean_attention_distance(a).tolist(),
                       attn.cls_patch_attention(a).tolist(), strict=True)  # fmt: skip
        rows += [{"role": role, "layer": layer, "head": h, "entropy": e, "distance": d, "cls": c}
                 for h, (e, d, c) in enumerate(per_head)]  # fmt: skip
    return rows


def layer_means(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(role, layer) -> the heads' mean entropy, distance and class-token attention."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["role"], row["layer"]), []).append(row)
    return {key: {m: sum(r[m] for r in heads) / len(heads) for m in ("entropy", "distance", "cls")}
            for key, heads in groups.items()}  # fmt: skip


def rollout_rows(role: str, maps: dict[str, torch.Tensor]) -> list[dict]:
    first = [a[:ROLLOUT_SAMPLES] for a in maps.values()]
    cls = attn.attention_rollout(first)[:, 0, 1:]  # (samples, patches)
    grid = attn.patch_grid(cls.shape[1] + 1).long().tolist()
    return [{"role": role, "sample": s, "row": r, "col": c, "weight": float(cls[s, p])}
            for s in range(len(cls)) for p, (r, c) in enumerate(grid)]  # fmt: skip


def matched_similarity(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]):
    """Student layer -> 1 − mean JS / ln 2 of its heads matched to the teacher layer at the same
    relative depth (empty without a teacher with attention)."""
    if not teacher or not student:
        return {}
    t_layers, s_layers = list(teacher), list(student)
    return {s_layers[s]: attn.match_heads(attn.head_divergence(teacher[t_layers[t]],
                                                              student[s_layers[s]]))[2]
            for t, s in attn.paired_layers(len(t_layers), len(s_layers))}  # fmt: skip


def milestone_rows(inputs: Inputs, maps: dict[str, dict[str, torch.Tensor]],
                   final_match: dict[str, float], final_epoch: int) -> list[dict]:  # fmt: skip
    """The student's per-layer means at each milestone and at the end, and its heads' match
    with the final teacher's (`maps` and `final_match`: the final networks', already read)."""
    names = [m for m in inputs.cache.models() if re.fullmatch(r"student@epoch_\d+", m)]
    rows = []
    for name in [*names, "student"]:
        final = name == "student"
        epoch = final_epoch if final else int(name.split("_")[-1])
        student = maps["student"] if final else attention_maps(inputs, name)
        match = final_match if final else matched_similarity(maps["teacher"], student)
        means = layer_means(head_rows("student", student))
        rows += [{"epoch": epoch, "layer": layer, **m, **({"match": match[layer]} if match else {})}
                 for (_, layer), m in means.items()]  # fmt: skip
    return sorted(rows, key=lambda r: r["epoch"])


OVER_TRAINING = {"entropy": "attention entropy (nats)",
                 "distance": "mean attention distance (patches)",
                 "cls": "class-token attention on the patches",
                 "match": "head match with the teacher"}  # fmt: skip
"""The measures drawn over the student's milestones, one figure each."""


@register_measure("attention", "run")
def attention(inputs: Inputs) -> Output:
    if inputs.cache.kind == "sequence":  # no patch grid: kdlab.analysis.measures.sequence
        return Output()
    maps = {role: attention_maps(inputs, role) for role in ("teacher", "student")}
    if not any(maps.values()):
        return Output()  # no nn.MultiheadAttention in either network
    heads = [row for role, m in maps.items() for row in head_rows(role, m)]
    metrics = {f"attn_{name}/{role}/{layer}": value
               for (role, layer), means in layer_means(heads).items()
               for name, value in means.items()}  # fmt: skip
    out = Output(metrics, {"attention_heads": heads},
                 {"attention_heads": ("attention_heads", plots.attention_heads)})  # fmt: skip
    final_match = matched_similarity(maps["teacher"], maps["student"])
    out.metrics |= {f"attn_match/{layer}": similarity for layer, similarity in final_match.items()}
    out.plots["attention_rollout"] = [row for role, m in maps.items() if m
                                      for row in rollout_rows(role, m)]  # fmt: skip
    out.figures["attention_rollout"] = ("attention_rollout", plots.attention_rollout_maps)
    if maps["student"]:
        final_epoch = int(inputs.cache.meta["models"]["student"].get("epoch", 0))
        rows = milestone_rows(inputs, maps, final_match, final_epoch)
        out.plots["attention_by_epoch"] = rows
        if len({r["epoch"] for r in rows}) >= 2:
            for measure, label in OVER_TRAINING.items():
                if measure in rows[0]:
                    draw = plots.attention_over_training(measure, label)
                    out.figures[f"attention_{measure}_over_training"] = ("attention_by_epoch", draw)
    return out
