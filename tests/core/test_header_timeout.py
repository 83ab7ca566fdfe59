"""The request-head deadline, on real sockets: connections that never finish a request head
are closed; complete requests, kept-alive and long-lived connections are not touched."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from anyio.abc import SocketStream
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from colaflow_mcp.config import Settings
from colaflow_mcp.http_protocols import REQUEST_TIMEOUT, Impl, http_protocol
from tests.harness import fast_settings, live_server, served_config
from tests.mcp.mcpenv import Updates, propose_issue, subscribe
from tests.procs import AsyncServe

pytestmark = pytest.mark.anyio
IMPLS = pytest.mark.parametrize("impl", ["httptools", "h11"])
BOUND = 0.4  # the header timeout in these tests
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@asynccontextmanager
async def tiny_server(impl: Impl, keep_alive: float = 30.0) -> AsyncIterator[int]:
    """A one-route app under uvicorn with the deadline; yields its port."""
    settings = Settings(http_header_timeout_seconds=BOUND)
    config = uvicorn.Config(Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=0,
                            lifespan="off", log_level="warning", log_config=None,
                            timeout_keep_alive=int(keep_alive),
                            http=http_protocol(settings, impl))
    async with served_config(config) as port:
        yield port


async def read_until_closed(stream: SocketStream, within: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with anyio.fail_after(within):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


async def read_response(stream: SocketStream) -> bytes:
    """One small response (the tiny app's, ``hello`` last)."""
    data = b""
    with anyio.fail_after(5):
        while not data.endswith(b"hello"):
            data += await stream.receive()
    return data


async def canary_closed(port: int) -> None:
    """Open a bare connection and wait until the deadline closes it: proof, without a
    sleep, that at least one header timeout has passed since this call."""
    async with await anyio.connect_tcp("127.0.0.1", port) as canary:
        assert await read_until_closed(canary, BOUND + 5) == b""


@IMPLS
async def test_bare_connection_is_closed_after_the_bound(impl: Impl) -> None:
    async with tiny_server(impl) as port:
        start = time.monotonic()
        async with await anyio.connect_tcp("127.0.0.1", port) as bare:
            assert await read_until_closed(bare, BOUND + 5) == b""
        assert time.monotonic() - start >= BOUND * 0.9  # the deadline, not a refusal


@IMPLS
async def test_slowloris_is_closed_with_408_though_it_keeps_sending(impl: Impl) -> None:
    async with tiny_server(impl) as port, \
            await anyio.connect_tcp("127.0.0.1", port) as slow, \
            anyio.create_task_group() as tg:
        async def trickle() -> None:  # an attacker: a header line every tenth of the bound
            await slow.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for i in range(1000):
                await anyio.sleep(BOUND / 10)
                await slow.send(b"X-Pad-%d: x\r\n" % i)

        tg.start_soon(trickle)
        received = await read_until_closed(slow, BOUND + 5)
        tg.cancel_scope.cancel()
    assert received == REQUEST_TIMEOUT


@IMPLS
async def test_slowloris_after_a_kept_alive_request_is_closed(impl: Impl) -> None:
    async with tiny_server(impl) as port, await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(GET)
        assert b" 200 " in await read_response(conn)
        await conn.send(b"GET / HTTP/1.1\r\nHo")  # and never more
        assert await read_until_closed(conn, BOUND + 5) == REQUEST_TIMEOUT


@IMPLS
async def test_slow_but_complete_client_is_served_and_kept_alive(impl: Impl) -> None:
    async with tiny_server(impl) as port, await anyio.connect_tcp("127.0.0.1", port) as conn:
        for piece in (b"GET / HT", b"TP/1.1\r\nHost: 12", b"7.0.0.1\r\n", b"\r\n"):
            await conn.send(piece)
            await anyio.sleep(BOUND / 8)  # slow, but within the bound in total
        assert b" 200 " in await read_response(conn)
        # Idle past the header timeout: only uvicorn's keep-alive timeout (30 s) applies.
        await canary_closed(port)
        await conn.send(GET)
        assert b" 200 " in await read_response(conn)


@IMPLS
async def test_idle_kept_alive_connection_is_closed_by_the_keep_alive_timeout(impl: Impl
                                                                              ) -> None:
    async with tiny_server(impl, keep_alive=1) as port, \
            await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(GET)
        assert b" 200 " in await read_response(conn)
        await canary_closed(port)
        assert await read_until_closed(conn, 5) == b""  # uvicorn's, so no 408


async def test_serve_command_closes_connections_without_a_request_head(tmp_path: Path
                                                                       ) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
           "COLAFLOW_HTTP_HEADER_TIMEOUT_SECONDS": str(BOUND)}
    async with AsyncServe(env, tmp_path) as server:
        # serve() may return at "Application startup complete", just before the bind.
        await server.wait_for_output(
            lambda lines: any("Uvicorn running on" in line for line in lines), within=10)
        await _serve_command_checks(server.port)


async def _serve_command_checks(port: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as bare, \
            await anyio.connect_tcp("127.0.0.1", port) as slow:
        await slow.send(b"GET /health HTTP/1.1\r\n")
        assert await read_until_closed(bare, BOUND + 5) == b""
        assert await read_until_closed(slow, BOUND + 5) == REQUEST_TIMEOUT
        async with await anyio.connect_tcp("127.0.0.1", port) as ok:
            await ok.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert (await read_until_closed(ok, 10)).startswith(b"HTTP/1.1 200 ")


async def test_mcp_get_stream_outlives_the_header_timeout(database_url: str) -> None:
    settings = fast_settings(database_url, http_header_timeout_seconds=BOUND)
    gets: list[httpx2.Request] = []  # a cut GET stream would be reopened: count them

    async def count(request: httpx2.Request) -> None:
        if request.method == "GET":
            gets.append(request)

    async with live_server(settings) as h:
        await h.project()
        updates = Updates()
        port = int(h.base_url.rsplit(":", 1)[1])
        async with httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {await h.agent_key()}"},
            timeout=httpx2.Timeout(30, read=300), event_hooks={"request": [count]},
        ) as http, Client(streamable_http_client(f"{h.base_url}/mcp", http_client=http),
                          mode="legacy", message_handler=updates.handler, cache=None
                          ) as client:
            change = await propose_issue(client)
            await subscribe(client, change["resourceUri"])
            await canary_closed(port)
            assert (await h.approve(await h.reviewer_token(), change["pendingChangeId"])
                    ).status_code == 200
            with anyio.fail_after(10):
                await updates.wait_for(change["resourceUri"])
        assert len(gets) == 1
