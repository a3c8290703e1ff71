"""``python -m litkit`` is the ``litkit`` command."""

import sys

from .cli import main

sys.exit(main())
