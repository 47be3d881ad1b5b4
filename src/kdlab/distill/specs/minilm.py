"""`kd.minilm:` params (Wang et al. 2020); the last attention layers of two ViTs."""

from __future__ import annotations

import dataclasses
import math

from kdlab.distill.spec import PairInfo, register_spec
from kdlab.errors import ConfigError
from kdlab.schema import check_range


@dataclasses.dataclass(frozen=True)
class MiniLMParams:
    """`kd.minilm:`"""

    relation_heads: int = 0
    """Heads the relations are computed over. 0: each network's own when the counts match (as in
    MiniLM), else the greatest common divisor of the two counts; R > 0: queries, keys and values
    re-split into R heads (MiniLMv2), R dividing both widths."""
    weight: float = 10.0
    """w in alpha·w·L (at initialisation both networks' relations are near uniform and their KL
    small: 10 puts the term inside the kd-scale window)."""

    def validate(self, path: str) -> None:
        check_range(f"{path}.relation_heads", self.relation_heads, 0, 4096)
        check_range(f"{path}.weight", self.weight, 0, 1e6)


def check(params: MiniLMParams, pair: PairInfo) -> None:
    """Both networks need self-attention over the same tokens; the heads must line up."""
    if "sequence" in (pair.student.kind, pair.teacher.kind):
        raise ConfigError("kd.method minilm is built for two ViTs: a MiniLM term with padding "
                          "masks for sequence transformers is not built yet; use logit, dkd, "
                          "rkd or crd")  # fmt: skip
    for role, info in (("student", pair.student), ("teacher", pair.teacher)):
        if not info.attention_heads:
            raise ConfigError(f"kd.method minilm distils self-attention: the {role} has no "
                              f"nn.MultiheadAttention; use two ViTs")  # fmt: skip
    t_tokens, s_tokens = (
        next(reversed(i.stages.values()))[0] for i in (pair.teacher, pair.student)
    )
    if t_tokens != s_tokens:
        raise ConfigError(f"kd.method minilm needs the same tokens in both networks; the "
                          f"teacher has {t_tokens}, the student {s_tokens}")  # fmt: skip
    r = params.relation_heads
    for role, info in (("teacher", pair.teacher), ("student", pair.student)):
        width = next(reversed(info.stages.values()))[1]
        if r and width % r:
            raise ConfigError(f"kd.minilm.relation_heads {r} does not divide the {role}'s "
                              f"width {width}")  # fmt: skip


def relation_heads(params: MiniLMParams, pair: PairInfo) -> int:
    """The heads both networks' relations are computed over (see `relation_heads`)."""
    t_heads, s_heads = pair.teacher.attention_heads[-1], pair.student.attention_heads[-1]
    return params.relation_heads or math.gcd(t_heads, s_heads)


register_spec("minilm", MiniLMParams, check)
