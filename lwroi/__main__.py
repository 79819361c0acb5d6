"""``python -m lwroi``: the same command as ``lwroi``."""

import sys

from lwroi.cli import main

sys.exit(main())
