"""A response's head and body leave in one write (``http_protocols.HeadWithBody``); a head
whose body comes later is not held back for it; bytes keep their order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from colaflow_mcp.config import Settings
from colaflow_mcp.http_protocols import HeadWithBody, http_protocol
from tests.harness import served_config

pytestmark = pytest.mark.anyio


class Recording:
    """A transport that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return f"extra {name}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # HeadWithBody is for uvicorn's asyncio protocols


async def _pass_over() -> None:
    """Returns once the callbacks scheduled before this call (a held head's flush) have run:
    the loop runs ready callbacks in order."""
    loop = asyncio.get_running_loop()
    passed = loop.create_future()
    loop.call_soon(passed.set_result, None)
    await passed


async def test_head_and_body_of_one_pass_are_one_write() -> None:
    transport = Recording()
    out = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    out.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.writes == []
    out.write(b'{"ok":true}')
    assert transport.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"ok":true}']
    out.write(b"more")  # a stream's next chunk goes straight out
    assert transport.writes[-1] == b"more"
    await _pass_over()  # the end-of-pass flush has nothing left to send
    assert len(transport.writes) == 2


async def test_a_head_alone_leaves_at_the_end_of_the_pass() -> None:
    transport = Recording()
    out = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    out.write(b"HEAD")
    await _pass_over()
    assert transport.writes == [b"HEAD"]
    out.write(b"body")
    assert transport.writes == [b"HEAD", b"body"]


async def test_close_sends_a_held_head_first_and_the_rest_is_the_transports() -> None:
    transport = Recording()
    out = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    out.write(b"HEAD")
    out.close()
    assert transport.writes == [b"HEAD"] and transport.closed and out.is_closing()
    assert out.get_extra_info("peername") == "extra peername"


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning", log_config=None,
                            http=http_protocol(Settings(), "httptools"))
    async with served_config(config) as port:
        yield port


async def test_served_responses_are_whole_and_a_streams_head_is_not_held() -> None:
    head_seen = anyio.Event()

    async def small(request: Request) -> JSONResponse:
        return JSONResponse({"n": int(request.query_params["n"])})

    async def stream(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            with anyio.fail_after(5):
                await head_seen.wait()  # only once the client has the head
            yield b"first"
        return StreamingResponse(body(), media_type="text/plain")

    app = Starlette(routes=[Route("/small", small), Route("/stream", stream)])
    async with served(app) as port, await anyio.connect_tcp("127.0.0.1", port) as conn:
        for n in range(3):  # kept alive: each answer complete, in order
            await conn.send(b"GET /small?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            data = b""
            with anyio.fail_after(5):
                while not data.endswith(b"}"):
                    data += await conn.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: " in head
            assert body == b'{"n":%d}' % n
        await conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with anyio.fail_after(5):
            while b"\r\n\r\n" not in data:
                data += await conn.receive()
        assert data.startswith(b"HTTP/1.1 200 OK") and b"first" not in data
        head_seen.set()
        with anyio.fail_after(5):
            while b"first" not in data:
                data += await conn.receive()
