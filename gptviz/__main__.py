"""``python -m gptviz``: the command line (see gptviz/cli.py)."""

import sys

from gptviz.cli import main

sys.exit(main())
