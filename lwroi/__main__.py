"""``python -m lwroi``: the same command as ``lwroi``."""

import sys

from lwroi.cli import entry_point

sys.exit(entry_point())
