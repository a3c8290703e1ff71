"""API specs: wire formats an endpoint can speak instead of litkit's own, e.g. OpenAI chat.

``litkit.serve(api, spec=litkit.specs.OpenAIChat())`` serves ``POST /v1/chat/completions`` and
``GET /v1/models``. ``OpenAISpec`` is the same protocol with LitServe's hook conventions (request
objects with attribute access, messages with tool calls and token usage); ``OpenAIEmbeddingSpec``
serves ``POST /v1/embeddings``. A spec runs in the worker around the user's hooks, and the server reads its
paths and error bodies. Stdlib only: both processes import this folder.
"""

from .chat import OpenAIChat
from .openai import OpenAISpec
from .openai_embedding import OpenAIEmbeddingSpec
from .spec import Spec

__all__ = ["OpenAIChat", "OpenAISpec", "OpenAIEmbeddingSpec", "Spec"]
