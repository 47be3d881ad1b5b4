"""SPOTER-shaped sequence transformers (kdlab.models.spoter): an encoder over the frames, a
decoder whose one learned class query reads the encoder's output, a linear head.

Bohacek & Hruz 2022, "Sign Pose-based Transformer for Word-level Sign Language Recognition"
(WACV workshops; github.com/matyasbohacek/spoter). `spoter` is the paper's size and its
choices: d_model 108 (54 2-D keypoints, no frame projection), 9 heads, 6 + 6 post-norm layers,
feed-forward 2048, dropout 0.1, one learned position vector added to every frame ("constant"),
and its decoder layer, which has no self-attention and adds the query to itself in its place.
`spoter_small` trains on a CPU in minutes; `spoter_tiny` is a student of the same family.
Any preset's sizes can be changed from params: `teacher.size: {dim: 96, heads: 6}` (keys:
dim, heads, encoder_layers, decoder_layers, ff_dim, dropout, position, spoter_decoder).

Layers (stages) are `encoder.<i>` (T, D) and `decoder.<i>` (1, D); the attention modules are
`encoder.<i>.self_attn` and `decoder.<i>.cross_attn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdlab.architectures import ShapeInfo, register_arch
from kdlab.errors import ConfigError
from kdlab.schema import check_choice, check_range

POSITIONS = ("learned", "sinusoidal", "constant")
"""Positional embeddings: one learned vector per frame, the fixed sinusoids of Vaswani et al.,
or SPOTER's one learned vector added to every frame."""


def spoter_shapes(config: Mapping[str, Any], num_classes: int, input_size: Any) -> ShapeInfo:
    if not isinstance(input_size, tuple):
        raise ConfigError("a SPOTER-shaped model reads sequences (T_max, C), not images")
    frames, _channels = input_size
    dim = config["dim"]
    stages = {f"encoder.{i}": (frames, dim) for i in range(config["encoder_layers"])}
    stages |= {f"decoder.{i}": (1, dim) for i in range(config["decoder_layers"])}
    heads = (config["heads"],) * (config["encoder_layers"] + config["decoder_layers"])
    return ShapeInfo(stages, dim, num_classes, heads, kind="sequence")


def check_spoter_size(path: str, config: Mapping[str, Any]) -> None:
    """`<role>.size` of a SPOTER-shaped model (the preset's config with the overrides)."""
    for key in ("dim", "heads", "encoder_layers", "decoder_layers", "ff_dim"):
        check_range(f"{path}.{key}", config[key], 1, 65_536)
    if config["dim"] % config["heads"]:
        raise ConfigError(f"{path}.heads {config['heads']} must divide {path}.dim "
                          f"{config['dim']} (each head is dim / heads wide)")  # fmt: skip
    check_range(f"{path}.dropout", config["dropout"], 0, 1, high_open=True)
    check_choice(f"{path}.position", config["position"], POSITIONS)


def register_spoter(name: str, **config: Any) -> None:
    check_spoter_size(name, config)
    register_arch(name, "spoter", config, spoter_shapes, kind="sequence",
                  check_size=check_spoter_size)  # fmt: skip


register_spoter("spoter", dim=108, heads=9, encoder_layers=6, decoder_layers=6, ff_dim=2048,
                dropout=0.1, position="constant", spoter_decoder=True)  # fmt: skip
register_spoter("spoter_small", dim=64, heads=4, encoder_layers=3, decoder_layers=2, ff_dim=128,
                dropout=0.1, position="learned", spoter_decoder=False)  # fmt: skip
register_spoter("spoter_tiny", dim=32, heads=2, encoder_layers=2, decoder_layers=1, ff_dim=64,
                dropout=0.1, position="learned", spoter_decoder=False)  # fmt: skip
