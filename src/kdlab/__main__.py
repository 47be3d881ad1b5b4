"""`python -m kdlab ...`: the `kdlab` command without the console script on PATH."""

import sys

from kdlab.cli import main

sys.exit(main())
