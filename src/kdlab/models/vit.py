"""A small Vision Transformer built on nn.MultiheadAttention (torchvision's VisionTransformer).

Stages are the outputs of the encoder blocks (`block1`..`blockL`), token sequences (B, T, D)
with the class token first; the embedding is the final LayerNorm's class token. KD methods that
need convolutional maps refuse this model (kdlab.distill.specs.require_conv_maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.architectures.vit import vit_patch_size
from kdlab.models import register_family
from kdlab.models.base import FeatureModel, Features


@register_family("vit")
class ViT(FeatureModel):
    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
        depth: int = 4, heads: int = 4, dim: int = 64, mlp_dim: int = 128,
    ) -> None:  # fmt: skip
        # Imported here: torchvision adds seconds to every `kdlab` start, and only ViTs need it.
        from torchvision.models.vision_transformer import VisionTransformer

        super().__init__()
        patch = vit_patch_size(image_size)
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.vit = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=depth,
                                     num_heads=heads, hidden_dim=dim, mlp_dim=mlp_dim,
                                     num_classes=num_classes)  # fmt: skip
        # torchvision's patch embedding assumes RGB.
        self.vit.conv_proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.stage_names = tuple(f"block{i + 1}" for i in range(depth))
        self.embedding_dim = dim

    def stage_modules(self) -> dict[str, nn.Module]:
        return dict(zip(self.stage_names, self.vit.encoder.layers, strict=True))

    def embedding_hook(self):
        return self.vit.encoder.ln, lambda tokens: tokens[:, 0]  # the class token after the LN

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Features:
        tokens = self.vit._process_input(x)  # (B, P, D) patch embeddings
        cls = self.vit.class_token.expand(len(tokens), -1, -1)
        out = torch.cat([cls, tokens], dim=1) + self.vit.encoder.pos_embedding
        out = self.vit.encoder.dropout(out)
        stages = {}
        for name, block in self.stage_modules().items():
            last_input = out
            out = block(out)
            stages[name] = out
        embedding = self.vit.encoder.ln(out)[:, 0]
        extras = self.last_qkv(last_input) if "last_qkv" in self.extras else {}
        return Features(stages, embedding, self.vit.heads(embedding), extras)

    def last_qkv(self, last_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """The last attention layer's query, key and value projections (B, T, D) of its input,
        as nn.MultiheadAttention computes them (heads are slices of D)."""
        block = self.vit.encoder.layers[-1]
        attention = block.self_attention
        qkv = F.linear(block.ln_1(last_input), attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)
        return {"last_q": q, "last_k": k, "last_v": v}
