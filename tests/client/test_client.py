"""``litkit.Client`` and its ``await`` twin ``litkit.AsyncClient`` against a live server."""

from __future__ import annotations

import asyncio

import pytest

import apis
import litkit
from conftest import wait_until


def test_leaving_the_with_block_of_a_stream_cancels_the_work(serve, events):
    server = serve(apis.Ticker(events.path))
    client = litkit.Client(server.url)
    with client.stream({"interval": 0.005}) as chunks:
        assert [next(chunks) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert chunks.closed
    events.wait_for("finally")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the stream to be counted cancelled")
    assert list(chunks) == []  # a closed stream is exhausted


def test_a_refused_stream_raises_at_the_call(serve):
    server = serve(apis.Ticker())
    client = litkit.Client(server.url)
    with pytest.raises(litkit.HTTPError, match="no endpoint at /nowhere") as raised:
        client.stream({}, path="/nowhere")
    assert raised.value.status == 404
    with pytest.raises(litkit.HTTPError, match="failed at chunk 1"):
        list(client.stream({"n": 3, "fail_at": 1, "interval": 0}, sse=True))
    assert client.health() == {"status": "ok"}


def test_async_client_predict_health_and_errors(serve):
    server = serve(apis.Echo())

    async def main():
        client = litkit.AsyncClient(server.url)
        health = await client.health()
        answers = await asyncio.gather(*(client.predict({"n": i}) for i in range(5)))
        with pytest.raises(litkit.HTTPError, match="input must be a list") as raised:
            await client.predict({"raise": "http"})
        return health, answers, raised.value.status

    health, answers, status = asyncio.run(main())
    assert health == {"status": "ok"}
    assert answers == [{"echo": {"n": i}} for i in range(5)]
    assert status == 422


def test_async_client_streams_ndjson_and_sse(serve):
    server = serve(apis.Ticker())
    client = litkit.AsyncClient(server.url)

    async def collect(**options):
        return [chunk async for chunk in client.stream({"n": 4, "interval": 0}, **options)]

    assert asyncio.run(collect()) == [{"i": i} for i in range(4)]
    assert asyncio.run(collect(sse=True)) == [{"i": i} for i in range(4)]

    async def failing():
        return [chunk async for chunk in client.stream({"n": 4, "fail_at": 2, "interval": 0})]

    with pytest.raises(litkit.HTTPError, match="RuntimeError: failed at chunk 2"):
        asyncio.run(failing())


def test_leaving_async_with_of_a_stream_cancels_the_work(serve, events):
    server = serve(apis.Ticker(events.path))

    async def main():
        async with litkit.AsyncClient(server.url).stream({"interval": 0.005}) as chunks:
            first = [await chunks.__anext__() for _ in range(3)]
        return first, chunks.closed

    first, closed = asyncio.run(main())
    assert first == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert closed
    events.wait_for("finally")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the stream to be counted cancelled")


def test_async_client_refused_stream_raises_at_async_with(serve):
    server = serve(apis.Ticker())

    async def main():
        async with litkit.AsyncClient(server.url).stream({}, path="/nowhere"):
            pass

    with pytest.raises(litkit.HTTPError, match="no endpoint at /nowhere"):
        asyncio.run(main())


def test_clients_check_their_url():
    for cls in (litkit.Client, litkit.AsyncClient):
        with pytest.raises(ValueError, match="url must look like 'http://127.0.0.1:8000', got 'localhost:8000'"):
            cls("localhost:8000")


@pytest.mark.parametrize("head", [b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n"], ids=["status", "length", "underscore"])
def test_async_client_refuses_a_response_head_int_cannot_read(head):
    """Regression (issue 14, bug 1, the client side): ``str.isdigit()`` let ``²`` through to
    ``int()``, which raised a bare ValueError; ``int()`` alone took ``1_0`` as ten."""

    async def main():
        async def answer(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + b"0123456789")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ConnectionError, match="not an HTTP response|Content-Length is not a number of bytes"):
                await litkit.AsyncClient(f"http://127.0.0.1:{port}").health(timeout=5)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
