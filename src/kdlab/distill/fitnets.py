"""`fitnets`: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    L = mean( (r(S_g) - T_h)² )

S_g is the student's *guided* layer and T_h the teacher's *hint* layer, chosen separately
(`guided_layer`, `hint_layer`); r is a trainable connector mapping the student's channels to the
teacher's: Conv 1×1 where spatial sizes match, a strided 3×3 conv where the student's map is
larger, upsampling + Conv 1×1 where it is smaller (each followed by BN + ReLU, since the hints
are post-ReLU stage outputs). The teacher's hint is detached. The paper's first stage, training
the student up to the guided layer on the hint alone, runs for `hint_epochs` (0 = off) before
the (1 - alpha)·CE + alpha·w·L training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.distill.base import Distiller, PairInfo, register
from kdlab.distill.specs.fitnets import FitNetsParams


def make_connector(
    student_chw: tuple[int, int, int], teacher_chw: tuple[int, int, int]
) -> nn.Module:
    """r: student (C_s, H_s, W_s) -> teacher (C_t, H_t, W_t)."""
    (c_s, h_s, w_s), (c_t, h_t, w_t) = student_chw, teacher_chw
    if (h_s, w_s) == (h_t, w_t):
        layers: list[nn.Module] = [nn.Conv2d(c_s, c_t, 1, bias=False)]
    elif h_s > h_t:
        layers = [nn.Conv2d(c_s, c_t, 3, stride=h_s // h_t, padding=1, bias=False)]
    else:
        layers = [nn.Upsample(size=(h_t, w_t), mode="bilinear", align_corners=False),
                  nn.Conv2d(c_s, c_t, 1, bias=False)]  # fmt: skip
    return nn.Sequential(*layers, nn.BatchNorm2d(c_t), nn.ReLU(inplace=True))


@register("fitnets", FitNetsParams)
class FitNets(Distiller):
    def __init__(self, params: FitNetsParams, pair: PairInfo | None = None) -> None:
        super().__init__(params, pair)
        if pair is None:
            raise ValueError("fitnets needs the networks' shapes to build its connector")
        self.connector = make_connector(
            pair.student.stages[params.guided_layer], pair.teacher.stages[params.hint_layer]
        )

    def hint_loss(self, student, teacher) -> torch.Tensor:
        guided = self.connector(student.stages[self.params.guided_layer])
        hint = teacher.stages[self.params.hint_layer].detach()
        return F.mse_loss(guided.float(), hint.float())

    def loss(self, student, teacher, batch):
        return self.hint_loss(student, teacher)

    def pretraining_epochs(self) -> int:
        return self.params.hint_epochs

    def pretrain_loss(self, student, teacher):
        return self.hint_loss(student, teacher)
