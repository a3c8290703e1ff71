"""API specs: wire formats an endpoint can speak instead of litkit's own, e.g. OpenAI chat.

``litkit.serve(api, spec=litkit.specs.OpenAIChat())`` serves ``POST /v1/chat/completions`` and
``GET /v1/models``. A spec runs in the worker around the user's hooks, and the server reads its
paths and error bodies. Stdlib only: both processes import this folder.
"""

from .openai import OpenAIChat
from .spec import Spec

__all__ = ["OpenAIChat", "Spec"]
