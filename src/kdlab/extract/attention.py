"""Per-head attention weights of every nn.MultiheadAttention in a model, without changing it.

A forward pre-hook asks each module for `need_weights=True, average_attn_weights=False` and a
forward hook keeps the weights (B, heads, T, T); the module's first output, the only one the
model uses, is the same attention output. Key padding masks are honoured by the module itself,
so padded keys get exactly zero weight.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def mha_modules(model: nn.Module) -> dict[str, nn.MultiheadAttention]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward pass stores {module name: weights (B, heads, T, T)}."""
    weights: dict[str, torch.Tensor] = {}

    def ask_for_weights(_module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def keep(name):
        def hook(_module, _args, output):
            weights[name] = output[1].detach()

        return hook

    handles = []
    for name, module in mha_modules(model).items():
        handles.append(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        handles.append(module.register_forward_hook(keep(name)))
    try:
        yield weights
    finally:
        for handle in handles:
            handle.remove()
