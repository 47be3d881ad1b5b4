"""How big each KD term is next to cross-entropy at initialisation (to choose default weights).

For a dataset shape and a teacher/student pair, both networks freshly initialised, on one batch
of normalised Gaussian images: ratio = alpha·w·L_method / ((1 − alpha)·CE). Default weights are
chosen so that, at alpha = 0.5, every ratio lies within [0.1, 10].

An untrained teacher in eval mode would normalise nothing (its BatchNorm running statistics are
still mean 0, variance 1) and its activations grow with depth, unlike any trained teacher's. So
BatchNorm uses batch statistics here, which is what a trained teacher's running statistics
approximate; a trained teacher checkpoint can be passed instead.
"""

from __future__ import annotations

import dataclasses

import torch

from kdlab.data.datasets import DATASETS
from kdlab.data.loader import Batch
from kdlab.distill.base import PairInfo, student_loss
from kdlab.distill.registry import METHODS, make_distiller
from kdlab.distill.specs import methods_serving
from kdlab.models import make_model

DEFAULT_PAIRS = (
    ("resnet20", "resnet8"),
    ("resnet56", "resnet20"),
    ("resnet110", "resnet56"),
    ("vit_small", "vit_tiny"),
)
"""Each method is measured on the pairs it serves (its spec's check); the others are blank."""


@dataclasses.dataclass(frozen=True)
class ScaleRow:
    dataset: str
    teacher: str
    student: str
    method: str
    ce: float
    kd: float
    ratio: float


def measure_pair(
    dataset: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    teacher_arch: str,
    student_arch: str,
    methods: list[str],
    alpha: float = 0.5,
    batch: int = 64,
    seed: int = 0,
    artifacts: dict | None = None,
) -> list[ScaleRow]:
    """One row per method: the CE and weighted-KD parts of the loss at initialisation."""
    height, width, channels = image_shape
    torch.manual_seed(seed)
    teacher = make_model(teacher_arch, channels, num_classes, height).train().requires_grad_(False)
    student = make_model(student_arch, channels, num_classes, height).train()
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, channels, height, width, generator=gen)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    pair = PairInfo.probe(student, teacher, image_shape, artifacts,
                          train_size=DATASETS[dataset].train_size)  # fmt: skip
    teacher.extras = student.extras = frozenset().union(*(METHODS[m].cls.extras for m in methods))
    with torch.no_grad():
        t_feats = teacher.forward_features(images)
        s_feats = student.forward_features(images)
    rows = []
    served = methods_serving(pair)
    for method in (m for m in methods if m in served):  # e.g. no feature maps in a ViT
        distiller = make_distiller(method, None, pair)
        with torch.no_grad():
            terms = student_loss(distiller, alpha, s_feats, t_feats,
                                 Batch(images, labels, torch.arange(batch)))  # fmt: skip
        ce = (1 - alpha) * terms.ce.item()
        kd = alpha * distiller.weight * terms.kd.item()
        rows.append(ScaleRow(dataset, teacher_arch, student_arch, method, ce, kd, kd / ce))
    return rows


def kd_methods() -> list[str]:
    return [name for name, spec in METHODS.items() if spec.cls.needs_teacher]


def measure_all(
    datasets: list[str], pairs: list[tuple[str, str]], batch: int = 64
) -> list[ScaleRow]:
    """Every KD method on every (dataset, teacher, student); ft gets a fresh paraphraser."""
    import tempfile
    from pathlib import Path

    from kdlab.data.datasets import DATASETS
    from kdlab.distill.ft import PARAPHRASER_FORMAT, Paraphraser
    from kdlab.training.checkpoint import save_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            spec = DATASETS[name]
            if spec.kind != "image":  # the pairs measured here are image networks
                continue
            for teacher, student in pairs:
                path = Path(tmp) / f"{name}-{teacher}.pt"
                torch.manual_seed(0)
                paraphraser = Paraphraser(64, 0.5)  # FT's default rate on the 64-channel stage3
                save_checkpoint({"format": PARAPHRASER_FORMAT, "trained": True,
                                 "state_dict": paraphraser.state_dict()}, path)  # fmt: skip
                artifacts = {"paraphraser": path}
                rows += measure_pair(name, spec.image_shape, spec.num_classes, teacher, student,
                                     kd_methods(), batch=batch, artifacts=artifacts)  # fmt: skip
    return rows


def markdown_table(rows: list[ScaleRow]) -> str:
    """dataset × pair rows, one column per method: the ratio alpha·w·L / ((1 − alpha)·CE)."""
    methods = sorted({r.method for r in rows})
    lines = ["| dataset | teacher → student | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]  # fmt: skip
    keys = list(dict.fromkeys((r.dataset, r.teacher, r.student) for r in rows))
    for dataset, teacher, student in keys:
        cells = {r.method: r.ratio for r in rows
                 if (r.dataset, r.teacher, r.student) == (dataset, teacher, student)}  # fmt: skip
        lines.append(f"| {dataset} | {teacher} → {student} | "
                     + " | ".join(f"{cells[m]:.2f}" if m in cells else "–" for m in methods)
                     + " |")  # fmt: skip
    return "\n".join(lines)
