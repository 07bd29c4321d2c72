"""``python -m ctv_core`` runs the ``ctv`` command line."""

import sys

from .cli import main

sys.exit(main())
