"""What every kdlab model exposes to KD methods and extraction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from kdlab.architectures import ShapeInfo


@dataclasses.dataclass
class Features:
    """One forward pass, with every representation a KD method or an analysis may need.

    `stages` maps stage names (in network order) to their outputs; `embedding` is the pooled
    vector fed to the classifier; `logits` its output. Accessed by name, never by position.
    """

    stages: dict[str, torch.Tensor]  # name -> (B, C_i, H_i, W_i)
    embedding: torch.Tensor  # (B, D)
    logits: torch.Tensor  # (B, num_classes)
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    """Outputs a KD method asked the network for (`FeatureModel.extras`), e.g. `last_q`,
    `last_k`, `last_v`: the last attention layer's projections (B, T, D)."""


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class FeatureModel(nn.Module):
    """A classifier whose `forward_features(x)` returns `Features`; `forward(x)` returns logits.

    `stage_names` lists the keys of `Features.stages`; each is also the name of the submodule
    that produces it, so forward hooks on `getattr(model, name)` see the same tensors.
    """

    stage_names: tuple[str, ...] = ()
    extras: frozenset[str] = frozenset()
    """Extra outputs `forward_features` adds to Features.extras (set by the KD method's setup)."""

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Features:
        """`mask` (B, T), True at padded frames: a sequence batch's padding (None for images,
        which image networks ignore)."""
        raise NotImplementedError

    def stage_modules(self) -> dict[str, nn.Module]:
        """Stage name -> the submodule whose output is that stage (for forward hooks)."""
        return {name: getattr(self, name) for name in self.stage_names}

    def hook_points(self) -> dict[str, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
        """Every extractable layer: name -> (module to hook, function of that module's output).

        The stages, then `embedding`; the same tensors `forward_features` returns.
        """
        points = {name: (module, _identity) for name, module in self.stage_modules().items()}
        points["embedding"] = self.embedding_hook()
        return points

    def embedding_hook(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return features_of(self, x, mask).logits


class StagedConvNet(FeatureModel):
    """A convolutional classifier of three stages: `stem`, `stage1`..`stage3` (each a sequence of
    residual blocks, the first of which may change width and stride), `head` (identity unless a
    family needs one), global average pooling and the linear classifier `fc`."""

    stage_names = ("stage1", "stage2", "stage3")

    def build(self, stem: nn.Module, block: Callable[[int, int, int], nn.Module], stem_width: int,
              widths: tuple[int, ...], strides: tuple[int, ...], blocks: int, num_classes: int,
              head: Callable[[int], nn.Module] | None = None) -> None:  # fmt: skip
        """Add the modules, in this order: stem, the stages of `blocks` blocks(in, out, stride),
        head(channels), pool, fc; then initialise them (Kaiming for convolutions, BN at 1, 0)."""
        self.stem = stem
        channels = stem_width
        for i, (width, stride) in enumerate(zip(widths, strides, strict=True), start=1):
            layers = []
            for b in range(blocks):
                layers.append(block(channels, width, stride if b == 0 else 1))
                channels = width
            self.add_module(f"stage{i}", nn.Sequential(*layers))
        self.head = head(channels) if head is not None else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self.embedding_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embedding_hook(self):
        return self.pool, lambda pooled: pooled

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Features:
        out = self.stem(x)
        stages = {}
        for name in self.stage_names:
            out = getattr(self, name)(out)
            stages[name] = out
        embedding = self.pool(self.head(out))
        return Features(stages=stages, embedding=embedding, logits=self.fc(embedding))


def features_of(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> Features:
    """`model.forward_features(x, mask)`; an image batch (no mask) calls `forward_features(x)`,
    so a family written before sequences (or a user's) keeps working."""
    return model.forward_features(x) if mask is None else model.forward_features(x, mask)


def logits_of(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`model(x, mask)`, or `model(x)` for an image batch (see features_of)."""
    return model(x) if mask is None else model(x, mask)


def probe_shapes(model: FeatureModel, in_channels: int, height: int,
                 width: int | None = None) -> ShapeInfo:  # fmt: skip
    """Run one tiny forward pass (eval mode, no grad) to read the model's feature shapes:
    on images (in_channels, height, width), or, without `width`, on sequences of `height`
    frames of `in_channels` values."""
    was_training = model.training
    param = next(model.parameters())
    model.eval()
    with torch.no_grad():
        if width is None:
            x = torch.zeros(2, height, in_channels, device=param.device, dtype=param.dtype)
        else:
            x = torch.zeros(2, in_channels, height, width, device=param.device, dtype=param.dtype)
        feats = model.forward_features(x)
    model.train(was_training)
    heads = tuple(m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention))
    return ShapeInfo(
        stages={name: tuple(t.shape[1:]) for name, t in feats.stages.items()},
        embedding_dim=feats.embedding.shape[1],
        num_classes=feats.logits.shape[1],
        attention_heads=heads,
        kind="sequence" if width is None else "image",
    )
