"""``python -m MRISuperResLib.cli``: the ``mrisuperres`` command."""

import sys

from .app import main

sys.exit(main())
