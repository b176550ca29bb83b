"""``python -m fastlog ...`` runs the ``fastlog`` command line."""
import sys

from .cli import main

sys.exit(main())
