"""SPOTER-shaped encoder–decoder over variable-length sequences (kdlab.architectures.spoter).

Every attention is an `nn.MultiheadAttention` named where a reader looks for it
(`encoder.<i>.self_attn`, `decoder.<i>.cross_attn`) and given the batch's key-padding mask, so
padded frames get exactly zero attention and a padded batch computes what each sample computes
alone. The layers are our own (post-norm, as in the paper and nn.Transformer): SPOTER's decoder
layer deletes `self_attn` from nn.TransformerDecoderLayer, which torch 2.x's forward no longer
tolerates; `spoter_decoder` reproduces what its forward computes in its place (the query plus
itself, dropout, LayerNorm).

Stages: `encoder.<i>` (B, T, D) and `decoder.<i>` (B, 1, D). For extraction and analysis an
encoder stage is the mean over each sample's valid frames (padding never enters a CKA, an SAE
or a pooled embedding); the embedding is the class query after the last decoder layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register_family
from kdlab.models.base import FeatureModel, Features


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over valid frames (mask True at padded frames)."""
    if mask is None:
        return tokens.mean(dim=1)
    valid = (~mask).to(tokens.dtype)[..., None]  # (B, T, 1)
    return (tokens * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """x = LN(x + SA(x)); x = LN(x + FF(x)), self-attention over the valid frames."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.self_attn(x, x, x, key_padding_mask=mask, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(attended))
        return self.norm2(x + self.dropout2(self.ff(x)))


class DecoderLayer(nn.Module):
    """The class query reads the frames: q = LN(q + CA(q, frames)); q = LN(q + FF(q)). No
    self-attention (one query has nothing to attend to); with `spoter_decoder`, SPOTER's
    q = LN(q + dropout(q)) first, where nn.TransformerDecoderLayer had its self-attention."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float,
                 spoter_decoder: bool) -> None:  # fmt: skip
        super().__init__()
        self.spoter_decoder = spoter_decoder
        if spoter_decoder:
            self.norm0, self.dropout0 = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, frames: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        if self.spoter_decoder:
            query = self.norm0(query + self.dropout0(query))
        read = self.cross_attn(query, frames, frames, key_padding_mask=mask, need_weights=False)[0]
        query = self.norm1(query + self.dropout1(read))
        return self.norm2(query + self.dropout2(self.ff(query)))


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sinusoidal positions (Vaswani et al. 2017)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return table


@register_family("spoter")
class SpoterTransformer(FeatureModel):
    """Built for sequences of at most `image_size` frames of `in_channels` values each."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, dim: int, heads: int,
        encoder_layers: int, decoder_layers: int, ff_dim: int, dropout: float, position: str,
        spoter_decoder: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.max_frames = image_size
        self.frame_proj = nn.Identity() if in_channels == dim else nn.Linear(in_channels, dim)
        self.position = position
        if position == "learned":
            self.pos = nn.Parameter(torch.randn(image_size, dim) * 0.02)
        elif position == "constant":  # SPOTER: one vector, torch.rand as in its code
            self.pos = nn.Parameter(torch.rand(1, dim))
        else:
            self.register_buffer("pos", sinusoids(image_size, dim), persistent=False)
        self.class_query = nn.Parameter(torch.rand(1, dim))  # SPOTER's initialisation
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, ff_dim, dropout)
                                     for _ in range(encoder_layers))  # fmt: skip
        self.decoder = nn.ModuleList(DecoderLayer(dim, heads, ff_dim, dropout, spoter_decoder)
                                     for _ in range(decoder_layers))  # fmt: skip
        # nn.Transformer's final norms of encoder and decoder, which SPOTER inherits.
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.stage_names = (*(f"encoder.{i}" for i in range(encoder_layers)),
                            *(f"decoder.{i}" for i in range(decoder_layers)))  # fmt: skip
        self.embedding_dim = dim
        self._mask: torch.Tensor | None = None

    def stage_modules(self) -> dict[str, nn.Module]:
        return {**{f"encoder.{i}": m for i, m in enumerate(self.encoder)},
                **{f"decoder.{i}": m for i, m in enumerate(self.decoder)}}  # fmt: skip

    def hook_points(self):
        """Encoder stages as the mean over each sample's valid frames, decoder stages and the
        embedding as the class query (B, D): what is extracted never contains padding."""
        points = {}
        for name, module in self.stage_modules().items():
            if name.startswith("encoder."):
                points[name] = (module, lambda out: masked_mean(out, self._mask))
            else:
                points[name] = (module, lambda out: out[:, 0])
        points["embedding"] = self.embedding_hook()
        return points

    def embedding_hook(self):
        return self.decoder_norm, lambda query: query[:, 0]

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Features:
        """x (B, T, C) with T ≤ max_frames; mask (B, T) True at padded frames (None: none)."""
        frames = x.shape[1]
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames: this model was built for at most "
                             f"{self.max_frames}")  # fmt: skip
        self._mask = mask
        pos = self.pos[:frames] if self.position != "constant" else self.pos
        out = self.frame_proj(x) + pos
        stages, last_input = {}, out
        for i, layer in enumerate(self.encoder):
            last_input = out
            out = layer(out, mask)
            stages[f"encoder.{i}"] = out
        extras = self.last_qkv(last_input) if "last_qkv" in self.extras else {}
        memory = self.encoder_norm(out)
        query = self.class_query.expand(len(x), -1, -1)  # (B, 1, D)
        for i, layer in enumerate(self.decoder):
            query = layer(query, memory, mask)
            stages[f"decoder.{i}"] = query
        embedding = self.decoder_norm(query)[:, 0]
        return Features(stages, embedding, self.fc(embedding), extras)

    def last_qkv(self, last_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """The last encoder self-attention's query, key and value projections (B, T, D) of its
        input (post-norm: the layer's input itself), as nn.MultiheadAttention computes them;
        for MiniLM, which applies the batch's padding mask."""
        attention = self.encoder[-1].self_attn
        q, k, v = F.linear(last_input, attention.in_proj_weight,
                           attention.in_proj_bias).chunk(3, dim=-1)  # fmt: skip
        return {"last_q": q, "last_k": k, "last_v": v}
