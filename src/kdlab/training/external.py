"""A model trained elsewhere as the teacher stage's network (`external.path`, `external.sha256`):
its weights are imported instead of trained, so `extract` and `analyze` (and a student's KD)
read it like any kdlab model.

The file must be a `torch.save` of tensors and plain data (loaded with `weights_only=True`,
never unpickling code): a kdlab `model.pt`, a plain `state_dict` (possibly under a
`state_dict` or `model` key), or SPOTER's, whose `nn.Transformer` names are mapped to kdlab's
SPOTER-shaped family (`spoter_names`). SPOTER's own training script saves the whole pickled
module; export its weights first: `torch.save(model.state_dict(), "spoter.pt")`. The file's
sha256 must equal `external.sha256` (what DVC tracks in its place); the network is built as
`teacher.arch` for the dataset, loaded strictly, and evaluated on the test split, which gives
`metrics/teacher/metrics.json`. model.pt records where the weights came from.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from kdlab.checksum import sha256_file
from kdlab.errors import CheckpointError

SPOTER_RENAMES = (
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"encoder.\1.self_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear([12])\.", r"encoder.\1.ff.linear\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm([12])\.", r"encoder.\1.norm\2."),
    (r"^transformer\.encoder\.norm\.", "encoder_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.", r"decoder.\1.cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear([12])\.", r"decoder.\1.ff.linear\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"decoder.\1.norm0."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"decoder.\1.norm1."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"decoder.\1.norm2."),
    (r"^transformer\.decoder\.norm\.", "decoder_norm."),
    (r"^linear_class\.", "fc."),
)
"""SPOTER's parameter names (its nn.Transformer, decoder layers without self-attention) ->
kdlab.models.spoter's. Its `row_embed` is unused by its forward (only `pos`, the first row's
copy, is added), so it is dropped."""


def spoter_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SPOTER's state_dict with kdlab's names; `pos` (1, 1, D) becomes (1, D)."""
    renamed = {}
    for key, value in state.items():
        if key == "row_embed":
            continue
        if key == "pos":
            renamed["pos"] = value.reshape(1, -1)
            continue
        for pattern, replacement in SPOTER_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring), or one CheckpointError line."""
    from kdlab.training.checkpoint import _read

    content = _read(path)
    if isinstance(content, dict) and content.get("format") == "kdlab.model/1":
        content = content.get("state_dict")
    elif isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if (
        not isinstance(content, dict)
        or not content
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items())
    ):
        raise CheckpointError(f"external.path {path} is not a state_dict (a mapping of "
                              "parameter names to tensors)")  # fmt: skip
    if any(key.startswith("transformer.") for key in content):
        content = spoter_names(content)
    return content


def load_external(path: str | Path, sha256: str, arch: str, in_channels: int, num_classes: int,
                  image_size: int, size: dict | None = None) -> torch.nn.Module:  # fmt: skip
    """`arch` (with `teacher.size`) built for the dataset, with the file's weights (strictly:
    every name and shape)."""
    from kdlab.models import make_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"external.path {path} does not exist")
    actual = sha256_file(path)
    if actual != sha256:
        raise CheckpointError(f"external.path {path} has sha256 {actual}, but external.sha256 "
                              f"is {sha256}: not the file the params name")  # fmt: skip
    state = read_state_dict(path)
    model = make_model(arch, in_channels, num_classes, image_size, size)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which "
                f"{arch} does not" if unexpected else
                f"gives {wrong[0]} shape {tuple(state[wrong[0]].shape)}, {arch} on this data "
                f"needs {tuple(expected[wrong[0]].shape)}")  # fmt: skip
        raise CheckpointError(f"external.path {path} does not fit teacher.arch {arch}: it {what} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(wrong)} of another shape)")  # fmt: skip
    model.load_state_dict(state)
    return model
