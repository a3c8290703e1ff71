"""The example APIs LitServe's docs use (``ls.test_examples.SimpleLitAPI`` and the others), written
for litkit with LitServe's names and behaviour, so that documented code runs with the import swapped.

* ``SimpleLitAPI`` (``{"input": x}`` answers ``{"output": x**2}``), ``SimpleBatchedAPI`` (the same,
  batched with numpy), ``SimpleTorchAPI`` (a torch ``Linear`` layer, ``2x + 1``), ``SimpleStreamAPI``
  (streams ``"0: text"``, ``"1: text"``, ``"2: text"``);
* for ``ls.OpenAISpec``: ``TestAPI`` and its variants (a custom ``encode_response``, tool calls,
  structured output), ``OpenAIBatchContext``;
* for ``ls.OpenAIEmbeddingSpec``: in ``openai_embedding_spec_example``.
"""

from .openai_spec_example import OpenAIBatchContext, TestAPI, TestAPIWithCustomEncode, TestAPIWithStructuredOutput, TestAPIWithToolCalls
from .simple_example import SimpleBatchedAPI, SimpleLitAPI, SimpleStreamAPI, SimpleTorchAPI

__all__ = [
    "SimpleLitAPI",
    "SimpleBatchedAPI",
    "SimpleTorchAPI",
    "SimpleStreamAPI",
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithStructuredOutput",
    "TestAPIWithToolCalls",
    "OpenAIBatchContext",
]
