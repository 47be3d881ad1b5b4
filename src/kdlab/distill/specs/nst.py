"""`kd.nst:` params (Huang & Wang 2017) and the pairs NST serves: conv maps, with the chosen
stages in both networks."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import PairInfo, check_stage_names, register_spec
from kdlab.distill.specs import require_conv_maps
from kdlab.schema import check_items, check_range


@dataclasses.dataclass(frozen=True)
class NSTParams:
    """`kd.nst:`"""

    stages: tuple[str, ...] = ("stage3",)
    """Stages (present in both networks) whose channel distributions are matched."""
    degree: int = 2
    """d of the polynomial kernel."""
    c: float = 0.0
    """c of the polynomial kernel."""
    weight: float = 30.0
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_items(f"{path}.stages", self.stages)
        check_range(f"{path}.degree", self.degree, 1, 8)
        check_range(f"{path}.c", self.c, 0, 1e3)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def check(params: NSTParams, pair: PairInfo) -> None:
    require_conv_maps("nst", pair)
    check_stage_names("kd.nst.stages", params.stages, pair)


register_spec("nst", NSTParams, check)
