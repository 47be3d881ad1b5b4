"""`kd.at:` params (Zagoruyko & Komodakis 2017) and the pairs AT serves: conv maps, with the
chosen stages in both networks."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import PairInfo, check_stage_names, register_spec
from kdlab.distill.specs import require_conv_maps
from kdlab.schema import check_items, check_range


@dataclasses.dataclass(frozen=True)
class ATParams:
    """`kd.at:`"""

    stages: tuple[str, ...] = ("stage1", "stage2", "stage3")
    """Stages (present in both networks) whose attention maps are matched."""
    p: float = 2.0
    """Exponent of |A| in the attention map."""
    weight: float = 2.0
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_items(f"{path}.stages", self.stages)
        check_range(f"{path}.p", self.p, 0, 16, low_open=True)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def check(params: ATParams, pair: PairInfo) -> None:
    require_conv_maps("at", pair)
    check_stage_names("kd.at.stages", params.stages, pair)


register_spec("at", ATParams, check)
