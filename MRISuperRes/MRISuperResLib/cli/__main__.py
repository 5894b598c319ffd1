"""``python -m MRISuperResLib.cli``: the ``mrisuperres`` command."""

import sys

from . import main

sys.exit(main())
