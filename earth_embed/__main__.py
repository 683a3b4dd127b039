"""``python -m earth_embed`` is the ``earth-embed`` command."""

import sys

from .cli import main

sys.exit(main())
