"""The legacy GET stream tells clients how long to wait before reconnecting (SSE ``retry:``),
so the Python SDK's single reconnection attempt rides out a short network outage."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.harness import Harness, fast_settings, in_process, live_server
from tests.mcp.mcpenv import ACCEPT, INIT, LEGACY, Updates, mcp_client, propose_issue, subscribe
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.anyio


async def _first_sse_block(h: Harness, key: str) -> bytes:
    """The first SSE block (up to its blank line) of a fresh session's GET stream."""
    headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT,
               "MCP-Protocol-Version": LEGACY}
    r = await h.client.post("/mcp", json=INIT, headers=headers)
    assert r.status_code == 200, r.text
    headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    received = b""
    with anyio.fail_after(10):
        async with h.client.stream("GET", "/mcp", headers=headers) as get:
            assert get.status_code == 200
            assert get.headers["content-type"].startswith("text/event-stream")
            async for chunk in get.aiter_raw():
                received += chunk
                if b"\n\n" in received or b"\r\n\r\n" in received:
                    break
    return received.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


async def test_the_get_stream_opens_with_the_retry_hint(server: Harness) -> None:
    assert await _first_sse_block(server, await server.agent_key()) == b"retry: 3000"


async def test_the_retry_hint_is_a_setting(tmp_path: Path) -> None:
    settings = fast_settings(f"sqlite:///{tmp_path / 'retry.db'}", mcp_sse_retry_seconds=2.5)
    async with live_server(settings) as h:
        assert await _first_sse_block(h, await h.agent_key()) == b"retry: 2500"


async def test_a_retry_hint_under_two_seconds_is_refused_at_startup(tmp_path: Path) -> None:
    settings = fast_settings(f"sqlite:///{tmp_path / 'retry.db'}", mcp_sse_retry_seconds=1)
    with pytest.raises(BaseException) as refused:
        async with in_process(settings):
            pass
    assert "COLAFLOW_MCP_SSE_RETRY_SECONDS must be at least 2" in _messages(refused.value)


def _awaited_functions(task: asyncio.Task[Any]) -> Iterator[str]:
    """Qualified names of the coroutines ``task`` is suspended in, outermost first."""
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        yield awaited.cr_code.co_qualname
        awaited = awaited.cr_await


async def test_open_streams_are_pinged_from_one_task_not_one_each(tmp_path: Path) -> None:
    """sse-starlette's ping task per stream (~5 KiB per idle session) is off; the endpoint's
    keep-alive still sends the SSE comment on every open GET stream, on time."""
    settings = fast_settings(f"sqlite:///{tmp_path / 'ping.db'}", mcp_sse_ping_seconds=0.2)
    async with live_server(settings) as h:
        key = await h.agent_key()
        headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT,
                   "MCP-Protocol-Version": LEGACY}
        opened = []
        for _ in range(2):
            r = await h.client.post("/mcp", json=INIT, headers=headers)
            assert r.status_code == 200, r.text
            opened.append({**headers, "Mcp-Session-Id": r.headers["mcp-session-id"]})
        async with h.client.stream("GET", "/mcp", headers=opened[0]) as first, \
                h.client.stream("GET", "/mcp", headers=opened[1]) as second:
            for get in (first, second):
                received = b""
                with anyio.fail_after(10):
                    async for chunk in get.aiter_raw():
                        received += chunk
                        if b": ping\r\n\r\n" in received:
                            break
            pinging = [name for task in asyncio.all_tasks()
                       for name in _awaited_functions(task)
                       if name in ("EventSourceResponse._ping", "SseKeepAlive.run")]
            assert pinging == ["SseKeepAlive.run"]


def _messages(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return " | ".join(_messages(inner) for inner in error.exceptions)
    return str(error)


@asynccontextmanager
async def through_proxy(h: Harness) -> AsyncIterator[tuple[Harness, TcpProxy]]:
    """The same server, reached through a TCP proxy the test can cut."""
    port = int(h.base_url.rsplit(":", 1)[1])
    proxy = TcpProxy("127.0.0.1", port)
    async with anyio.create_task_group() as tg:
        proxy_port = await tg.start(proxy.run)
        yield dataclasses.replace(h, base_url=f"http://127.0.0.1:{proxy_port}"), proxy
        tg.cancel_scope.cancel()


async def test_the_python_client_rides_out_a_two_second_outage_of_its_get_stream(
    server: Harness,
) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    updates = Updates()
    async with through_proxy(server) as (proxied, proxy), \
            mcp_client(proxied, key, "legacy", updates) as client:
        # A change decided before subscribing is reported at once, on the GET stream: once
        # it arrived, the stream is open (and the client has its retry hint).
        first = await propose_issue(client, "first")
        assert (await server.approve(token, first["pendingChangeId"])).status_code == 200
        await subscribe(client, first["resourceUri"])
        with anyio.fail_after(10):
            await updates.wait_for(first["resourceUri"])
        second = await propose_issue(client, "second")
        await subscribe(client, second["resourceUri"])

        proxy.cut()  # every connection drops, new ones are refused
        assert (await server.approve(token, second["pendingChangeId"])).status_code == 200
        await anyio.sleep(2.0)  # the outage itself, not a wait for something
        proxy.restore()

        with anyio.fail_after(10):
            await updates.wait_for(second["resourceUri"])
    assert updates.uris == [first["resourceUri"], second["resourceUri"]]


def _tasks_in(*names: str) -> list[str]:
    return [name for task in asyncio.all_tasks() for name in _awaited_functions(task)
            if name in names]


async def test_an_idle_get_stream_holds_no_task_of_its_own(server: Harness) -> None:
    """The GET stream is served from the session's store (issue 14): while idle only the
    request's own task waits (no sse-starlette task group, no sender); an update still
    arrives on it, and the sender that carried it ends with the burst."""
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    updates = Updates()
    ours = ("GetStream.serve", "GetStream._write", "EventSourceResponse.__call__")
    async with mcp_client(server, key, "legacy", updates) as client:
        first = await propose_issue(client, "first")
        assert (await server.approve(token, first["pendingChangeId"])).status_code == 200
        await subscribe(client, first["resourceUri"])  # decided: reported at once
        with anyio.fail_after(10):
            await updates.wait_for(first["resourceUri"])
        second = await propose_issue(client, "second")
        await subscribe(client, second["resourceUri"])
        assert _tasks_in(*ours) == ["GetStream.serve"]
        assert (await server.approve(token, second["pendingChangeId"])).status_code == 200
        with anyio.fail_after(10):
            await updates.wait_for(second["resourceUri"])
        senders = [task for task in asyncio.all_tasks()
                   if "GetStream._write" in _awaited_functions(task)]
        with anyio.fail_after(10):  # the sender ends once nothing is left to send
            await asyncio.wait(senders) if senders else None
        assert _tasks_in(*ours) == ["GetStream.serve"]
    assert updates.uris == [first["resourceUri"], second["resourceUri"]]
