"""`kd.crd:` params (Tian et al. 2020); embeddings serve any pair."""

from __future__ import annotations

import dataclasses

from kdlab.distill.spec import register_spec
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class CRDParams:
    """`kd.crd:` defaults are the paper's (and RepDistiller's) CIFAR-100 settings."""

    feat_dim: int = 128
    """Dimension of the shared embedding space both networks' embeddings are projected to."""
    negatives: int = 16384
    """K, negatives per sample, drawn from the memory of every training sample (nce_k)."""
    temperature: float = 0.07
    """τ of the critic exp(⟨u, v⟩ / τ) (nce_t)."""
    momentum: float = 0.5
    """Memory update: m ← normalise(momentum·m + (1 − momentum)·v) (nce_m)."""
    weight: float = 0.8
    """w in alpha·w·L (RepDistiller's β for CRD)."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.feat_dim", self.feat_dim, 1, 65536)
        check_range(f"{path}.negatives", self.negatives, 1, 1 << 20)
        check_range(f"{path}.temperature", self.temperature, 0, 100, low_open=True)
        check_range(f"{path}.momentum", self.momentum, 0, 1, high_open=True)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


register_spec("crd", CRDParams)
