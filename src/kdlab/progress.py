"""Progress bars for long work: one tqdm bar (count, rate, ETA) on a terminal, nothing in logs.

Under DVC's log capture or SLURM (stderr not a terminal) the bars are off and the one line per
epoch that each stage logs remains, so `dvc queue logs` stays readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
        scale: int = 1, leave: bool = False) -> Iterator[T]:  # fmt: skip
    """`items` with a bar; `scale` counts each item as that many units (a batch as its
    images, so the rate reads in images/s)."""
    return iter(tqdm(items, desc=desc, total=total, unit=unit, unit_scale=scale if scale > 1
                     else False, leave=leave, file=sys.stderr, dynamic_ncols=True,
                     disable=None))  # fmt: skip
