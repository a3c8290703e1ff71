"""``python -m litkit.worker --control-fd FD --worker-id N``: how the server starts a worker."""

import sys

from .main import main

sys.exit(main())
