"""Rows of a batched stream: ``litkit.FINISHED`` ends one request's stream while the others go on,
and ``litkit.cancelled(i)`` tells ``predict`` which request's client has left (issue 27)."""

from __future__ import annotations

import concurrent.futures
import json

import apis
import pytest
from conftest import ChunkReader, raw_post, wait_until

import litkit


def test_finished_ends_one_request_s_stream_while_the_others_go_on(serve, events):
    """Before FINISHED, a batched stream ended for every request only when predict returned."""
    server = serve(apis.RowsTicker(events.path), max_batch_size=3, batch_timeout=5.0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(lambda n, tag: list(server.stream({"n": n, "tag": tag})), n, tag) for n, tag in ((2, "a"), (5, "b"), (3, "c"))]
        results = [s.result() for s in streams]
    assert [e["size"] for e in events.named("batch")] == [3]
    for (n, tag), chunks in zip(((2, "a"), (5, "b"), (3, "c")), results):
        assert chunks == [{"i": i, "tag": tag} for i in range(n)]


def test_cancelled_with_an_index_says_which_client_of_the_batch_left(serve, events):
    """Before cancelled(i), predict could only learn that every client of its batch had left."""
    server = serve(apis.RowsTicker(events.path), max_batch_size=2, batch_timeout=5.0)
    first = raw_post(server.url, json.dumps({"tag": "first", "interval": 0.01}).encode())
    second = raw_post(server.url, json.dumps({"tag": "second"}).encode())
    readers = [ChunkReader(first), ChunkReader(second)]
    assert [r.status for r in readers] == [200, 200]
    for reader in readers:
        assert json.loads(reader.line())["i"] == 0
    assert all(step["cancelled"] == [False, False] for step in events.named("step"))
    readers[0].close()
    first.close()
    left = wait_until(lambda: [s for s in events.named("step") if s["cancelled"][0]], message="predict to see the first client gone")
    assert left[0]["cancelled"] == [True, False] and left[0]["all"] is False  # the second one still listens
    assert json.loads(readers[1].line())["tag"] == "second"
    readers[1].close()
    second.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="both clients counted cancelled")


def test_cancelled_with_an_index_outside_a_request_is_false_and_wants_an_int():
    assert litkit.cancelled(0) is False and litkit.cancelled(3) is False  # no request: nothing to cancel
    with pytest.raises(TypeError, match="an int"):
        litkit.cancelled("0")  # type: ignore[arg-type]


def test_a_client_leaving_a_batched_stream_does_not_get_the_worker_killed_while_others_listen(serve, events):
    """Bug (issue 27): the server armed cancel_grace for the request that left, and the batch,
    still streaming to the other client, outlived it: the worker was killed with every stream of
    the batch. The grace now runs once every client of the batch has left."""
    server = serve(apis.RowsTicker(events.path), max_batch_size=2, batch_timeout=5.0, cancel_grace=0.3)
    first = raw_post(server.url, json.dumps({"tag": "first", "interval": 0.01}).encode())
    second = raw_post(server.url, json.dumps({"tag": "second"}).encode())
    readers = [ChunkReader(first), ChunkReader(second)]
    for reader in readers:
        assert json.loads(reader.line())["i"] == 0
    readers[0].close()
    first.close()
    wait_until(lambda: [s for s in events.named("step") if s["cancelled"][0]], message="predict to see the first client gone")
    gone = events.named("step")[-1]["step"]
    # Well past cancel_grace (0.3 s at 10 ms a step): the second client is still served.

    def hundred_steps_on() -> dict | None:
        chunk = json.loads(readers[1].line())
        assert "i" in chunk, f"the second client's stream broke: {chunk}"
        return chunk if chunk["i"] >= gone + 100 else None

    assert wait_until(hundred_steps_on, message="100 more steps for the second client")["tag"] == "second"
    assert (server.status()["workers"][0]["killed"], server.status()["workers"][0]["restarts"]) == (0, 0)
    readers[1].close()
    second.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="both clients counted cancelled")
