"""`kd.rkd:` params (Park et al. 2019); embeddings serve any pair."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import register_spec
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class RKDParams:
    """`kd.rkd:`"""

    distance_weight: float = 1.0
    """w_D."""
    angle_weight: float = 2.0
    """w_A."""
    weight: float = 15.0
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.distance_weight", self.distance_weight, 0, 1e6)
        check_range(f"{path}.angle_weight", self.angle_weight, 0, 1e6)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


register_spec("rkd", RKDParams)
