"""`kd.dkd:` params (Zhao et al. 2022); logits serve any pair."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import register_spec
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class DKDParams:
    """`kd.dkd:` defaults are the paper's (and mdistiller's) CIFAR-100 settings."""

    tckd_weight: float = 1.0
    """The paper's α: weight of target-class KD (the binary target vs. rest distribution)."""
    nckd_weight: float = 8.0
    """The paper's β: weight of non-target-class KD (the distribution among the other classes)."""
    temperature: float = 4.0
    """Softmax temperature T (> 0)."""
    warmup: int = 20
    """Epochs over which the DKD term ramps up linearly (epoch e gets min(e / warmup, 1))."""
    weight: float = 1.0
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.tckd_weight", self.tckd_weight, 0, 1e6)
        check_range(f"{path}.nckd_weight", self.nckd_weight, 0, 1e6)
        check_range(f"{path}.temperature", self.temperature, 0, 1000, low_open=True)
        check_range(f"{path}.warmup", self.warmup, 0, 100_000)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


register_spec("dkd", DKDParams)
