"""A listen stream detached from its request (``http_protocols.HeldConnection``, the
``DETACH`` scope extension): what the connection does around it, on both of uvicorn's HTTP
implementations, over raw sockets.

- keep-alive: after the stream ends, the same connection serves the next request, also one
  the client pipelined while the stream was held (replayed to a fresh uvicorn protocol);
- ``Connection: close``: the connection closes after the stream;
- uvicorn's connection limit counts a detached stream's connection;
- graceful shutdown: uvicorn waits for a detached stream for its grace period, then cuts
  it; ``HubAwareServer`` cuts modern listens at once, with no final result, so the MCP
  client reports the subscription lost (and would listen again) instead of ended.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp.client.subscriptions import SubscriptionLost

from colaflow_mcp import http_protocols
from colaflow_mcp.http_protocols import HeldConnection, http_protocol
from colaflow_mcp.mcp.endpoint import McpEndpoint
from colaflow_mcp.mcp.listen_stream import DirectListen
from colaflow_mcp.serving import HubAwareServer
from tests.harness import Harness, fast_settings, live_server
from tests.mcp.mcpenv import mcp_client, revoke_agent_key

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body (after a frame's CRLF)
ALIVE = b'{"status":"alive"}'  # the body of GET /health/live


def _endpoint(h: Harness) -> McpEndpoint:
    endpoint: McpEndpoint = h.runtime.mcp
    return endpoint


def listen_request(h: Harness, key: str, uri: str, *, close: bool = False) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": "l1", "method": "subscriptions/listen",
                       "params": {"notifications": {"resourceSubscriptions": [uri]},
                                  "_meta": META}}).encode()
    host = h.base_url.removeprefix("http://")
    head = (f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: application/json, text/event-stream\r\n"
            "Content-Type: application/json\r\n"
            f"MCP-Protocol-Version: {MODERN}\r\nMcp-Method: subscriptions/listen\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n")
    return head.encode() + body


def health_request(h: Harness) -> bytes:
    return f"GET /health/live HTTP/1.1\r\nHost: {h.base_url[7:]}\r\n\r\n".encode()


class Raw:
    """One client connection, read raw."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    async def until(self, marker: bytes, start: int = 0) -> int:
        """Read until ``marker`` is in what was received after ``start``; its end."""
        while (at := self.received.find(marker, start)) < 0:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError(f"closed before {marker!r}: {self.received!r}")
            self.received += data
        return at + len(marker)

    async def to_eof(self) -> None:
        while data := await self.reader.read(65536):
            self.received += data

    def send(self, data: bytes) -> None:
        self.writer.write(data)


@asynccontextmanager
async def raw(h: Harness) -> AsyncIterator[Raw]:
    host, port = h.base_url[7:].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()


async def _end_listens_of(h: Harness, key: str) -> None:
    """Revoke ``key`` and drop its streams: each sends its final result and ends."""
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None and principal.api_key_id is not None
    await revoke_agent_key(h, key)
    await _endpoint(h).drop_revoked({principal.api_key_id}, 0)


def _listeners(h: Harness) -> list[DirectListen]:
    return [s for s in _endpoint(h).keepalive.streams if isinstance(s, DirectListen)]


@pytest.fixture(params=["httptools", "h11"])
async def impl_server(request: pytest.FixtureRequest, database_url: str
                      ) -> AsyncIterator[tuple[Harness, str]]:
    """A live server on one of uvicorn's HTTP implementations (ours: ``http_protocols``)."""
    settings = fast_settings(database_url)
    async with live_server(settings, http=http_protocol(settings, request.param)) as h:
        yield h, request.param


@pytest.mark.parametrize("pipelined", ["none", "after-ack", "with-the-listen"])
async def test_a_detached_stream_hands_its_keep_alive_connection_back(
        impl_server: tuple[Harness, str], pipelined: str) -> None:
    """After the stream's final result the same connection answers the next request: one
    sent after the stream ended, or pipelined while it was held (in two pieces, the
    second arriving while the stream is detached), or sent with the listen in one write
    (httptools has then already parsed it and the stream is not detached; h11 keeps the
    bytes and the detached stream replays them)."""
    h, impl = impl_server
    await h.project()
    key = await h.agent_key()
    uri = (await h.propose(key))["resourceUri"]
    second = health_request(h)
    with anyio.fail_after(20):
        async with raw(h) as c:
            c.send(listen_request(h, key, uri) + (second if pipelined == "with-the-listen"
                                                  else b""))
            acked = await c.until(b"notifications/subscriptions/acknowledged")
            await c.until(b"\r\n\r\n", acked)
            (listener,) = _listeners(h)
            if pipelined == "after-ack":
                c.send(second[:9])  # a partial head first
                await c.writer.drain()
                c.send(second[9:])
            await h.client.get("/health/live")  # a round trip: those bytes have arrived
            if pipelined == "with-the-listen" and impl == "httptools":
                assert listener.held is None  # already parsed: not detached
            else:
                assert isinstance(listener.held, HeldConnection)
                if pipelined == "after-ack":
                    assert listener.held.pending == second
            await _end_listens_of(h, key)
            end = await c.until(END)
            assert b'"result"' in c.received[:end]
            if pipelined == "none":
                assert c.received[end:] == b""
                c.send(second)
            answered = await c.until(ALIVE, end)
            assert c.received[end:].startswith(b"HTTP/1.1 200 OK\r\n")
            # And once more on the same connection, as after any response.
            c.send(second)
            await c.until(ALIVE, answered)
    assert _endpoint(h).subscriptions.listen_streams == set()


async def test_a_detached_stream_keeps_nothing_of_uvicorns_request(
        impl_server: tuple[Harness, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Once detached, uvicorn's protocol and its request cycle are freed by reference
    counting (no cycle left for the collector: that garbage is what an idle stream cost)."""
    h, _ = impl_server
    refs: list[tuple[weakref.ref[Any], weakref.ref[Any]]] = []
    hold = http_protocols._hold

    def spied(protocol: Any, *args: Any) -> HeldConnection:
        refs.append((weakref.ref(protocol), weakref.ref(protocol.cycle)))
        return hold(protocol, *args)

    monkeypatch.setattr(http_protocols, "_hold", spied)
    await h.project()
    key = await h.agent_key()
    uri = (await h.propose(key))["resourceUri"]
    with anyio.fail_after(20):
        async with raw(h) as c:
            c.send(listen_request(h, key, uri))
            await c.until(b"notifications/subscriptions/acknowledged")
            await h.client.get("/health/live")  # a round trip: the request's task is done
            ((protocol, cycle),) = refs
            assert protocol() is None and cycle() is None
            (listener,) = _listeners(h)
            assert isinstance(listener.held, HeldConnection)


async def test_a_detached_stream_of_a_closing_connection_closes_it(
        impl_server: tuple[Harness, str]) -> None:
    h, _ = impl_server
    await h.project()
    key = await h.agent_key()
    uri = (await h.propose(key))["resourceUri"]
    with anyio.fail_after(20):
        async with raw(h) as c:
            c.send(listen_request(h, key, uri, close=True))
            await c.until(b"notifications/subscriptions/acknowledged")
            (listener,) = _listeners(h)
            assert isinstance(listener.held, HeldConnection)
            assert listener.held.keep_alive is False
            await _end_listens_of(h, key)
            await c.to_eof()
            assert c.received.endswith(END)


async def test_the_client_going_ends_a_detached_stream(impl_server: tuple[Harness, str]
                                                      ) -> None:
    h, _ = impl_server
    await h.project()
    key = await h.agent_key()
    uri = (await h.propose(key))["resourceUri"]
    notifier = h.runtime.notifier
    with anyio.fail_after(20):
        async with raw(h) as c:
            c.send(listen_request(h, key, uri))
            await c.until(b"notifications/subscriptions/acknowledged")
            (listener,) = _listeners(h)
            assert isinstance(listener.held, HeldConnection)
            assert notifier.subscriber_count() == 1
        while _endpoint(h).subscriptions.listen_streams:  # ends with connection_lost
            await h.client.get("/health/live")
    assert _listeners(h) == [] and notifier.subscriber_count() == 0


async def test_uvicorns_connection_limit_counts_detached_streams(database_url: str) -> None:
    """``limit_concurrency`` 3: two detached listens and a new connection reach it (503);
    once one listen's client went, a new connection is served again."""
    settings = fast_settings(database_url)
    async with live_server(settings, limit_concurrency=3) as h:
        await h.project()
        key = await h.agent_key()
        uri = (await h.propose(key))["resourceUri"]
        await h.client.aclose()  # only the raw connections below are open
        with anyio.fail_after(20):
            async with raw(h) as a:
                async with raw(h) as b:
                    for c in (a, b):
                        c.send(listen_request(h, key, uri))
                        await c.until(b"notifications/subscriptions/acknowledged")
                    assert all(isinstance(s.held, HeldConnection) for s in _listeners(h))
                    assert await _probe(h) == 503
                while (status := await _probe(h)) == 503:  # until b's end is seen
                    pass
                assert status == 200
                assert len(_listeners(h)) == 1


async def _probe(h: Harness) -> int:
    """The status of ``GET /health/live`` on a new connection."""
    async with raw(h) as probe:
        probe.send(health_request(h))
        await probe.until(b"\r\n")
        return int(probe.received.split(b" ")[1])


async def test_uvicorns_graceful_shutdown_waits_for_a_detached_stream(
        database_url: str) -> None:
    """uvicorn's own server: a detached stream holds the shutdown for the grace period
    (2 s here), as a held request does, then its connection is cut."""
    received, elapsed = await _shutdown_with_a_detached_listen(database_url, None)
    assert elapsed >= 1.9
    assert b"notifications/subscriptions/acknowledged" in received
    assert b'"result"' not in received and not received.endswith(END)


async def test_hub_aware_shutdown_cuts_modern_listens_at_once(database_url: str) -> None:
    """``serve``'s server cuts detached listens first: no final result, no waiting for
    the grace period (30 s here)."""
    received, elapsed = await _shutdown_with_a_detached_listen(
        database_url, HubAwareServer, timeout_graceful_shutdown=30)
    assert elapsed < 10
    assert b"notifications/subscriptions/acknowledged" in received
    assert b'"result"' not in received and not received.endswith(END)


async def _shutdown_with_a_detached_listen(database_url: str, server_class: Any,
                                           **overrides: Any) -> tuple[bytes, float]:
    """Hold a raw detached listen, stop the server: what the client received, and how long
    the server took to stop."""
    done = anyio.Event()
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            async with live_server(fast_settings(database_url), server_class,
                                   **overrides) as h:
                await h.project()
                key = await h.agent_key()
                uri = (await h.propose(key))["resourceUri"]
                host, port = h.base_url[7:].split(":")
                c = Raw(*await asyncio.open_connection(host, int(port)))
                c.send(listen_request(h, key, uri))
                await c.until(b"notifications/subscriptions/acknowledged")
                (listener,) = _listeners(h)
                assert isinstance(listener.held, HeldConnection)
                tg.start_soon(_read_to_eof, c, done)
                started = time.monotonic()
            elapsed = time.monotonic() - started  # the server has stopped
            await done.wait()
            c.writer.close()
    assert _endpoint(h).subscriptions.listen_streams == set()
    return c.received, elapsed


async def _read_to_eof(c: Raw, done: anyio.Event) -> None:
    try:
        await c.to_eof()
    except OSError:
        pass
    done.set()


async def test_the_mcp_client_hears_the_subscription_lost_on_shutdown(
        database_url: str) -> None:
    """The SDK client reads a listen's final result as a graceful end (it stops) and a cut
    stream as ``SubscriptionLost`` (it listens again): ``serve``'s server cuts them."""
    lost, listening = anyio.Event(), anyio.Event()
    events: list[Any] = []

    async def listen(h: Harness, key: str, uri: str) -> None:
        try:
            async with mcp_client(h, key, "modern") as client:
                async with client.listen(resource_subscriptions=[uri]) as sub:
                    listening.set()
                    events.extend([event async for event in sub])
        except* SubscriptionLost:
            lost.set()
        except* Exception:
            pass  # the client's own teardown against a stopped server

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            async with live_server(fast_settings(database_url), HubAwareServer,
                                   timeout_graceful_shutdown=30) as h:
                await h.project()
                key = await h.agent_key()
                uri = (await h.propose(key))["resourceUri"]
                tg.start_soon(listen, h, key, uri)
                await listening.wait()
                (listener,) = _listeners(h)
                assert isinstance(listener.held, HeldConnection)
            await lost.wait()
    assert events == []
