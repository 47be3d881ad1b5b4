"""`kd.fitnets:` params (Romero et al. 2015) and the pairs FitNets serves: conv maps, a guided
student stage and a hint teacher stage whose sizes divide."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import PairInfo, register_spec
from kdlab.distill.specs import require_conv_maps
from kdlab.errors import ConfigError
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class FitNetsParams:
    """`kd.fitnets:`"""

    guided_layer: str = "stage2"
    """Student stage that is guided."""
    hint_layer: str = "stage2"
    """Teacher stage that gives the hint."""
    hint_epochs: int = 0
    """Epochs of hint-only pre-training of the student before KD training (paper's stage 1)."""
    weight: float = 1.5
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.hint_epochs", self.hint_epochs, 0, 10_000)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def check(params: FitNetsParams, pair: PairInfo) -> None:
    require_conv_maps("fitnets", pair)
    for role, name, info in (("guided_layer", params.guided_layer, pair.student),
                             ("hint_layer", params.hint_layer, pair.teacher)):  # fmt: skip
        if name not in info.stages:
            who = "student" if role == "guided_layer" else "teacher"
            raise ConfigError(
                f"kd.fitnets.{role} must be a {who} stage ({', '.join(info.stages)}), got {name!r}"
            )
    (_, h_s, w_s), (_, h_t, w_t) = (pair.student.stages[params.guided_layer],
                                    pair.teacher.stages[params.hint_layer])  # fmt: skip
    if h_s > h_t and (h_s % h_t or w_s % w_t or h_s // h_t != w_s // w_t):
        raise ConfigError(
            f"kd.fitnets: the guided layer ({h_s}×{w_s}) is not an integer multiple of the "
            f"hint layer ({h_t}×{w_t}); choose layers whose sizes divide"
        )


register_spec("fitnets", FitNetsParams, check)
