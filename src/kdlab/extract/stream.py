"""A model's layers over a whole split, one token a row, streamed into shards (extract/shards.py).

The split is read in order, one batch at a time; each named layer's output becomes rows:
(B, C, H, W) -> B·H·W channel vectors (token h·W + w), (B, T, D) -> B·T tokens (sequences: the
valid frames only, from the batch's padding mask), (B, D) -> B rows (token 0). Nothing but one
batch is held in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from kdlab.data.loader import BatchLoader, Split
from kdlab.errors import DataError
from kdlab.extract.shards import ShardWriter, write_metadata
from kdlab.fsutil import atomic_directory
from kdlab.models import FeatureModel
from kdlab.models.base import logits_of
from kdlab.progress import bar


@contextlib.contextmanager
def capture_tokens(model: FeatureModel, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Like capture_layers, but a stage gives its raw output, every token (a sequence encoder's
    hook point is the mean over valid frames; its shards hold each frame)."""
    points, stages = model.hook_points(), model.stage_modules()
    unknown = [name for name in layers if name not in points]
    if unknown:
        raise DataError(f"shards.layers: {unknown[0]!r} is not a layer; valid: "
                        f"{', '.join(points)}")  # fmt: skip
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        module, select = (stages[name], None) if name in stages else points[name]
        handles.append(module.register_forward_hook(
            lambda _m, _i, out, name=name, select=select:
            captured.__setitem__(name, out if select is None else select(out))))  # fmt: skip
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def tokens_of(output: torch.Tensor, mask: torch.Tensor | None):
    """(rows (n, d) float32, sample position in batch (n,), token (n,)) of one layer's output."""
    if output.ndim == 4:  # (B, C, H, W): every spatial position is a token
        b, c, h, w = output.shape
        flat = output.permute(0, 2, 3, 1).reshape(b, h * w, c)
    elif output.ndim == 3:
        flat = output
    elif output.ndim == 2:
        flat = output[:, None]
    else:
        raise DataError(f"a layer output of shape {tuple(output.shape)} has no token view")
    b, t, _ = flat.shape
    valid = torch.ones(b, t, dtype=torch.bool, device=flat.device)
    if mask is not None and mask.shape == (b, t):  # a sequence encoder's frames
        valid = ~mask
    position, token = valid.nonzero(as_tuple=True)
    return flat[position, token].float().cpu().numpy(), position.cpu().numpy(), token.cpu().numpy()


@torch.inference_mode()
def write_shards(model: FeatureModel, split: Split, split_name: str, mean: list[float],
                 std: list[float], layers: list[str], out_dir: Path, *, shard_rows: int,
                 dtype: str, batch_size: int, model_info: dict, seed: int,
                 finish: Callable[[Path], None] | None = None) -> dict[str, dict]:  # fmt: skip
    """Every sample of `split` through `model`; `out_dir/<layer>/` a ShardSet per layer,
    written beside `out_dir` and renamed into place (after `finish(tmp_dir)`, if given, adds
    its files). Returns each layer's metadata."""
    model.eval()
    loader = BatchLoader(split, batch_size, mean, std, train=False)
    written = {}
    with atomic_directory(out_dir) as tmp_dir, contextlib.ExitStack() as stack:
        acts = stack.enter_context(capture_tokens(model, layers))
        writers: dict[str, ShardWriter] = {}
        tokens_per_sample: dict[str, set[int]] = {layer: set() for layer in layers}
        batches = bar(loader, f"shards {split_name}", total=len(loader), unit="sample",
                      scale=loader.batch_size)  # fmt: skip
        for inputs, _labels, indices, mask in batches:
            logits_of(model, inputs, mask)
            samples = indices.cpu().numpy()
            for layer in layers:
                rows, position, token = tokens_of(acts[layer], mask)
                if layer not in writers:
                    (tmp_dir / layer).mkdir()
                    writers[layer] = ShardWriter(tmp_dir / layer, rows.shape[1], dtype, shard_rows)
                writers[layer].add(rows, samples[position], token)
                tokens_per_sample[layer].update(np.bincount(position).tolist())
        for layer, writer in writers.items():
            shards = writer.close()
            counts = sorted(tokens_per_sample[layer])
            written[layer] = write_metadata(
                tmp_dir / layer, split=split_name, layer=layer, d=writer.d, dtype=dtype,
                rows=writer.rows, samples=len(split), shard_rows=shard_rows,
                tokens_per_sample=counts[0] if len(counts) == 1 else "variable",
                model=model_info, seed=seed, shards=shards,
            )  # fmt: skip
        if finish is not None:
            finish(tmp_dir)
    return written
