"""`python -m kdlab ...`: the `kdlab` command without the console script on PATH."""

import sys

from kdlab.environment import require_environment

require_environment()

from kdlab.cli import main  # noqa: E402  (after the environment check)

sys.exit(main())
