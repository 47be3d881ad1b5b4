"""`ft`: Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor
Transfer", NeurIPS 2018.

Two stages, as in the paper:
1. A paraphraser P = (encoder, decoder) is trained as an autoencoder on the frozen teacher's
   last-stage features x with ‖x − P(x)‖² for `paraphraser_epochs` (stage `train_paraphraser`,
   cached per teacher by DVC), then frozen. Its encoder has C_t·k output channels (rate k).
2. The student's translator τ (trained with the student) maps the student's last-stage features
   to factors of the same shape; with F_T = encoder(T), F_S = τ(S):

    L = mean_batch ‖ F_T/‖F_T‖₂ − F_S/‖F_S‖₂ ‖_p,   p = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.loader import Stream
from kdlab.distill.base import Distiller, PairInfo, register
from kdlab.distill.specs.ft import LAYER, FTParams
from kdlab.errors import CheckpointError

PARAPHRASER_FORMAT = "kdlab.paraphraser/1"


def factor_channels(teacher_channels: int, rate: float) -> int:
    return max(1, round(teacher_channels * rate))


def _conv_block(c_in: int, c_out: int, transpose: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """Convolutional autoencoder on (C, H, W) teacher features; `encoder` gives the factor."""

    def __init__(self, channels: int, rate: float) -> None:
        super().__init__()
        k = factor_channels(channels, rate)
        self.encoder = nn.Sequential(
            *_conv_block(channels, channels), *_conv_block(channels, k), *_conv_block(k, k)
        )
        self.decoder = nn.Sequential(
            *_conv_block(k, k, True), *_conv_block(k, channels, True),
            *_conv_block(channels, channels, True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Translator(nn.Sequential):
    """Student features (C_s, H, W) -> factors (k, H, W)."""

    def __init__(self, student_channels: int, factor: int) -> None:
        super().__init__(
            *_conv_block(student_channels, student_channels),
            *_conv_block(student_channels, factor),
            *_conv_block(factor, factor),
        )


def factor_distance(f_s: torch.Tensor, f_t: torch.Tensor, p: int) -> torch.Tensor:
    """Mean over the batch of ‖unit(F_T) − unit(F_S)‖_p on flattened factors."""
    diff = F.normalize(f_t.flatten(1), dim=1) - F.normalize(f_s.flatten(1), dim=1)
    return diff.norm(p=p, dim=1).mean()


def load_paraphraser(path, teacher_channels: int, rate: float) -> Paraphraser:
    from kdlab.training.checkpoint import load_checkpoint

    payload = load_checkpoint(path, PARAPHRASER_FORMAT)
    if not payload.get("trained"):
        raise CheckpointError(f"{path} holds no paraphraser (stage ran with another kd.method)")
    paraphraser = Paraphraser(teacher_channels, rate)
    paraphraser.load_state_dict(payload["state_dict"])
    return paraphraser


@register("ft", FTParams)
class FactorTransfer(Distiller):
    artifacts = ("paraphraser",)

    def __init__(self, params: FTParams, pair: PairInfo | None = None) -> None:
        super().__init__(params, pair)
        if pair is None:
            raise ValueError("ft needs the networks' shapes to build its translator")
        c_t = pair.teacher.stages[LAYER][0]
        self.translator = Translator(
            pair.student.stages[LAYER][0], factor_channels(c_t, params.rate)
        )
        if "paraphraser" in pair.artifacts:
            self.paraphraser = load_paraphraser(pair.artifacts["paraphraser"], c_t, params.rate)
        else:  # restored from a checkpoint's state_dict instead
            self.paraphraser = Paraphraser(c_t, params.rate)
        self.paraphraser.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.paraphraser.eval()  # frozen: its BatchNorm statistics never move
        return self

    def loss(self, student, teacher, batch):
        with torch.no_grad():
            f_t = self.paraphraser.encoder(teacher.stages[LAYER].detach().float())
        f_s = self.translator(student.stages[LAYER])
        return factor_distance(f_s.float(), f_t, self.params.p)


def train_paraphraser(
    teacher: nn.Module, loader, params: FTParams, device: torch.device, progress=lambda r: r
) -> tuple[Paraphraser, float]:
    """Stage 1 of FT: fit the paraphraser to reconstruct the frozen teacher's features.

    Returns the paraphraser (eval mode) and the mean reconstruction MSE of its last epoch.
    """
    teacher.eval()
    channels = None
    paraphraser, optimizer = None, None
    last = float("nan")
    for epoch in progress(range(params.paraphraser_epochs)):
        loader.set_epoch(epoch, Stream.PARAPHRASER)
        total, batches = torch.zeros((), device=device), 0
        for images, _labels, _indices, _mask in loader:
            with torch.no_grad():
                target = teacher.forward_features(images).stages[LAYER].float()
            if paraphraser is None:
                channels = target.shape[1]
                paraphraser = Paraphraser(channels, params.rate).to(device).train()
                optimizer = torch.optim.Adam(paraphraser.parameters(), lr=params.paraphraser_lr)
            loss = F.mse_loss(paraphraser(target), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            batches += 1
        last = (total / batches).item()
    return paraphraser.eval(), last
