"""KD methods, one module each, registered by name.

This package's `__init__` imports nothing: importing one method module (the teacher stage
imports `kdlab.distill.none` only) must not import every other method, or every teacher would
depend on every KD method's code. `kdlab.distill.registry` imports them all and is what the
student stage, `kdlab check` and the grid use to look a method up by name.
"""
