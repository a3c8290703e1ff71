"""LitServe compatibility: ``import litkit as ls`` in place of ``import litserve as ls``.

``LitServer`` takes LitServe's arguments and serves through ``litkit.serve()``; an argument
litkit cannot honour raises a TypeError naming what to use instead. ``litkit`` exports these names
lazily (``litkit.LitServer``), so ``import litkit`` stays light. ``docs/migrating-from-litserve.md``
lists every LitServe feature and what litkit does with it.
"""

from .callbacks import Callback
from .loggers import Logger
from .server import LitServer

__all__ = ["Callback", "LitServer", "Logger"]
