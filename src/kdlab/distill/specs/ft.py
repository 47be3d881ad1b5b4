"""`kd.ft:` params (Kim, Park & Kwak 2018) and the pairs FT serves: conv maps whose `stage3`
outputs have the same spatial size in both networks."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import PairInfo, register_spec
from kdlab.distill.specs import require_conv_maps
from kdlab.errors import ConfigError
from kdlab.schema import check_range

LAYER = "stage3"
"""The teacher stage the paraphraser encodes, and the student stage the translator reads."""


@dataclasses.dataclass(frozen=True)
class FTParams:
    """`kd.ft:`"""

    rate: float = 0.5
    """k: factor channels = round(k · teacher channels)."""
    paraphraser_epochs: int = 10
    """Epochs of paraphraser (autoencoder) training on the frozen teacher."""
    paraphraser_lr: float = 1e-3
    """Adam learning rate of the paraphraser."""
    p: int = 1
    """Norm of the factor difference (the paper uses 1)."""
    weight: float = 0.5
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.rate", self.rate, 0, 4, low_open=True)
        check_range(f"{path}.paraphraser_epochs", self.paraphraser_epochs, 1, 10_000)
        check_range(f"{path}.paraphraser_lr", self.paraphraser_lr, 0, 1, low_open=True)
        check_range(f"{path}.p", self.p, 1, 2)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def check(params: FTParams, pair: PairInfo) -> None:
    require_conv_maps("ft", pair)
    for role, info in (("student", pair.student), ("teacher", pair.teacher)):
        if LAYER not in info.stages:
            raise ConfigError(f"kd.method ft needs a {LAYER} feature map in the {role}")
    if pair.student.stages[LAYER][1:] != pair.teacher.stages[LAYER][1:]:
        raise ConfigError(
            f"kd.method ft needs student and teacher {LAYER} maps of the same spatial size, "
            f"got {pair.student.stages[LAYER][1:]} and {pair.teacher.stages[LAYER][1:]}"
        )


register_spec("ft", FTParams, check)
