"""The one interface every KD method implements, and the registry that names them.

A method's params and the pairs it serves are its spec (kdlab.distill.spec, torch-free); its
`Distiller` here computes the loss."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.loader import Batch
from kdlab.distill.spec import PairInfo
from kdlab.models.base import Features


class Distiller(nn.Module):
    """A KD term L_method(student, teacher). Trainable parts (connectors...) are submodules.

    The student's loss is (1 - alpha)·CE + alpha·weight·L_method (see `student_loss`). Teacher
    features arrive without gradient; a method must never send gradient into the teacher.

    What a method may use besides the features: the batch's labels and sample indices
    (`loss`), the epoch and a generator of its own random stream (`begin_epoch`), and the
    training split's size (`PairInfo.train_size`, for per-sample state such as CRD's memory).
    State kept across steps must be buffers: they are checkpointed with the method.
    """

    needs_teacher: ClassVar[bool] = True
    artifacts: ClassVar[tuple[str, ...]] = ()
    """Names of the files in PairInfo.artifacts this method needs."""
    extras: ClassVar[frozenset[str]] = frozenset()
    """Extra outputs this method needs from both networks (FeatureModel.extras, e.g.
    {"last_qkv"}); the student's setup asks the networks for them."""
    training_state: ClassVar[tuple[str, ...]] = ()
    """Buffers that only training needs (CRD's memories): resume checkpoints keep them, model
    files do not (`model_state_dict`)."""

    def __init__(self, params: Any, pair: PairInfo | None = None) -> None:
        super().__init__()
        self.params = params

    @property
    def weight(self) -> float:
        """w in alpha·w·L_method; methods without a `weight` param use 1."""
        return float(getattr(self.params, "weight", 1.0))

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """The state a model file keeps: everything but `training_state`."""
        return {k: v for k, v in self.state_dict().items() if k not in self.training_state}

    def loss(self, student: Features, teacher: Features | None, batch: Batch) -> torch.Tensor:
        """The unweighted KD term, a scalar."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Called before each training epoch (`epoch` counts from 0) with a CPU generator seeded
        by (seed, epoch) alone, so a resumed run draws what an uninterrupted one would."""

    def pretraining_epochs(self) -> int:
        """Epochs of a method's own pre-training of the student (FitNets hints); 0 = none."""
        return 0

    def pretrain_loss(self, student: Features, teacher: Features) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type[Distiller]
    params_cls: type | None


METHODS: dict[str, MethodSpec] = {}


def register(name: str, params_cls: type | None = None):
    """Class decorator: make a Distiller available as `kd.method: <name>`."""

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        if name in METHODS:
            raise RuntimeError(f"KD method {name!r} registered twice")
        METHODS[name] = MethodSpec(name, cls, params_cls)
        return cls

    return decorate


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """The student's loss and its parts, all 0-d tensors still on the device."""

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


def student_loss(
    distiller: Distiller,
    alpha: float,
    student: Features,
    teacher: Features | None,
    batch: Batch,
    label_smoothing: float = 0.0,
) -> LossTerms:
    """(1 - alpha)·CE + alpha·w·L_method; a method without a teacher trains on CE alone."""
    ce = F.cross_entropy(student.logits.float(), batch.labels, label_smoothing=label_smoothing)
    if not distiller.needs_teacher:
        return LossTerms(total=ce, ce=ce, kd=torch.zeros_like(ce))
    kd = distiller.loss(student, teacher, batch).float()
    return LossTerms(total=(1.0 - alpha) * ce + alpha * distiller.weight * kd, ce=ce, kd=kd)


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two (B, C, H, W) maps to the smaller one's spatial size."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    if a.shape[-2] * a.shape[-1] > b.shape[-2] * b.shape[-1]:
        return F.adaptive_avg_pool2d(a, b.shape[-2:]), b
    return a, F.adaptive_avg_pool2d(b, a.shape[-2:])
