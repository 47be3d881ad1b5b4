"""`kd.method: none`: the pure baseline; no params, any pair (it has no teacher)."""

from kdlab.distill.spec import register_spec

register_spec("none")
