"""What every kdlab model exposes to KD methods and extraction."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class Features:
    """One forward pass, with every representation a KD method or an analysis may need.

    `stages` maps stage names (in network order) to their outputs; `embedding` is the pooled
    vector fed to the classifier; `logits` its output. Accessed by name, never by position.
    """

    stages: dict[str, torch.Tensor]  # name -> (B, C_i, H_i, W_i)
    embedding: torch.Tensor  # (B, D)
    logits: torch.Tensor  # (B, num_classes)


class FeatureModel(nn.Module):
    """A classifier whose `forward_features(x)` returns `Features`; `forward(x)` returns logits.

    `stage_names` lists the keys of `Features.stages`; each is also the name of the submodule
    that produces it, so forward hooks on `getattr(model, name)` see the same tensors.
    """

    stage_names: tuple[str, ...] = ()

    def forward_features(self, x: torch.Tensor) -> Features:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits
