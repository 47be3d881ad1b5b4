"""`kd.minilm:` params (Wang et al. 2020); the last self-attention layers of two ViTs or of two
sequence transformers (their encoders' last layers, with the padding mask)."""

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


def last_self_attention(info) -> tuple[int, int]:
    """(tokens, width) of the layer MiniLM reads: a ViT's last block, a sequence transformer's
    last encoder layer (its decoder's one query attends to nothing of its own)."""
    if info.kind == "sequence":
        encoder = [shape for name, shape in info.stages.items() if name.startswith("encoder.")]
        return encoder[-1] if encoder else (0, 0)
    return next(reversed(info.stages.values()))


def last_heads(info) -> int:
    """Heads of that layer (`attention_heads` lists the MHAs in network order, encoder first)."""
    if info.kind == "sequence":
        return info.attention_heads[sum(n.startswith("encoder.") for n in info.stages) - 1]
    return info.attention_heads[-1]


def check(params: MiniLMParams, pair: PairInfo) -> None:
    """Both networks need self-attention over the same tokens; the heads must line up."""
    if pair.student.kind != pair.teacher.kind:
        kinds = f"the teacher reads {pair.teacher.kind}s, the student {pair.student.kind}s"
        raise ConfigError(f"kd.method minilm compares two networks of the same kind: {kinds}")
    for role, info in (("student", pair.student), ("teacher", pair.teacher)):
        if not info.attention_heads or last_self_attention(info)[0] == 0:
            raise ConfigError(f"kd.method minilm distils self-attention: the {role} has no "
                              f"self-attention layer; use two ViTs or two sequence "
                              f"transformers with encoder layers")  # fmt: skip
    t_tokens, s_tokens = (last_self_attention(i)[0] for i in (pair.teacher, pair.student))
    if t_tokens != s_tokens:
        raise ConfigError(f"kd.method minilm needs the same tokens in both networks; the "
                          f"teacher has {t_tokens}, the student {s_tokens}")  # fmt: skip
    r = params.relation_heads
    for role, info in (("teacher", pair.teacher), ("student", pair.student)):
        width = last_self_attention(info)[1]
        if r and width % r:
            raise ConfigError(f"kd.minilm.relation_heads {r} does not divide the {role}'s "
                              f"width {width}")  # fmt: skip


def relation_heads(params: MiniLMParams, pair: PairInfo) -> int:
    """The heads both networks' relations are computed over (see `relation_heads`)."""
    t_heads, s_heads = (last_heads(info) for info in (pair.teacher, pair.student))
    return params.relation_heads or math.gcd(t_heads, s_heads)


register_spec("minilm", MiniLMParams, check)
