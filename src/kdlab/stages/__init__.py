"""One thin module per DVC stage, run as `python -m kdlab.stages.<name>` from dvc.yaml."""

from kdlab.environment import require_environment

require_environment()  # before any stage imports a third-party module: one line, not a traceback
