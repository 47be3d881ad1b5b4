"""`kd.logit:` params (Hinton et al. 2015); logits serve any pair."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import register_spec
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class LogitParams:
    """`kd.logit:`"""

    temperature: float = 4.0
    """Softmax temperature T (> 0)."""
    weight: float = 2.5
    """w in alpha·w·L."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.temperature", self.temperature, 0, 1000, low_open=True)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


register_spec("logit", LogitParams)
