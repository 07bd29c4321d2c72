"""``python -m ctv_core`` runs the ``ctv`` command line."""

import sys

from .cli.main import main

sys.exit(main())
