"""Paired statistics of KD against the pure baseline.

A KD student and the pure baseline of the same seed share the teacher, the student's
initialisation and the data order; only the loss differs. So the effect of KD is measured per
seed, Δ_s = acc(KD, s) − acc(baseline, s), and summarised by its mean and a 95 % Student-t
interval, mean ± t(0.975, n − 1) · sd / √n. "Δ > 0 at 95 %" means the interval's lower end is
above zero. With one seed there is no interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class PairedDelta:
    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def positive(self) -> bool:
        """Δ > 0 at 95 %: the whole interval lies above zero."""
        return not math.isnan(self.low) and self.low > 0


def paired_delta(deltas: Sequence[float], confidence: float = CONFIDENCE) -> PairedDelta:
    """Mean and t-interval of per-seed differences (NaN interval for fewer than two)."""
    values = [float(d) for d in deltas]
    n = len(values)
    if n == 0:
        return PairedDelta(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n < 2:
        return PairedDelta(n, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDelta(n, mean, sd, mean - half, mean + half)
