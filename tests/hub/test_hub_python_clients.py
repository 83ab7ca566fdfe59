"""Interop: the ``pysignalr`` (asyncio) and ``signalrcore`` (threads) clients, over WebSockets
(and signalrcore's Long Polling)."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from hubenv import HubEnv, ServerFactory
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HttpTransportType

pytestmark = pytest.mark.anyio


async def test_pysignalr_subscribes_and_receives_approved_and_rejected(env: HubEnv) -> None:
    a, b = await env.tenant("acme"), await env.tenant("bolt")
    approved, rejected = await env.propose(a, "one"), await env.propose(a, "two")
    foreign = await env.propose(b)
    # pysignalr applies access_token_factory only after negotiate: pass the header too.
    client = SignalRClient(env.hub_url, headers={"Authorization": f"Bearer {a.key}"})
    events: list[tuple[str, dict[str, Any]]] = []
    completions: dict[str, CompletionMessage] = {}
    opened, got_two, answered = anyio.Event(), anyio.Event(), anyio.Event()

    def on(name: str) -> Any:
        async def handler(args: list[dict[str, Any]]) -> None:
            events.append((name, args[0]))
            if len(events) == 2:
                got_two.set()
        return handler

    for name in ("PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired"):
        client.on(name, on(name))

    async def on_open() -> None:
        opened.set()

    client.on_open(on_open)

    def remember(key: str, expected: int) -> Any:
        async def cb(message: CompletionMessage) -> None:
            completions[key] = message
            if len(completions) == expected:
                answered.set()
        return cb

    async def on_error(message: CompletionMessage) -> None:
        completions["foreign"] = message
        if len(completions) == 3:
            answered.set()

    client.on_error(on_error)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        with anyio.fail_after(10):
            await opened.wait()
            await client.send("SubscribeToPendingChange", [approved],  # type: ignore[list-item]
                              on_invocation=remember("approved", 3))
            await client.send("SubscribeToPendingChange", [rejected],  # type: ignore[list-item]
                              on_invocation=remember("rejected", 3))
            await client.send("SubscribeToPendingChange", [foreign])  # type: ignore[list-item]
            await client.send("SubscribeToPendingChange", [foreign],  # type: ignore[list-item]
                              on_invocation=remember("foreign", 3))
            await answered.wait()
            await env.approve(b, foreign)
            await env.approve(a, approved)
            await env.reject(a, rejected, "duplicate")
            await got_two.wait()
        tg.cancel_scope.cancel()
    assert completions["approved"].result["status"] == "Pending"  # type: ignore[attr-defined]
    assert completions["foreign"].error == "pending change not found"  # type: ignore[attr-defined]
    by_name = dict(events)
    assert by_name["PendingChangeApproved"]["pendingChangeId"] == approved
    assert by_name["PendingChangeApproved"]["executionResult"]["success"] is True
    assert by_name["PendingChangeRejected"]["reason"] == "duplicate"
    assert len(events) == 2


async def test_signalrcore_subscribes_and_receives_expired(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_keep_alive_seconds=0.3) as env:
        await _signalrcore_round_trip(env)


async def test_signalrcore_long_polling_sends_its_handshake_before_polling(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_keep_alive_seconds=0.3, hub_long_poll_seconds=0.5) as env:
        await _signalrcore_round_trip(env, long_polling=True)


async def _signalrcore_round_trip(env: HubEnv, long_polling: bool = False) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    opened, subscribed, got = threading.Event(), threading.Event(), threading.Event()
    received: list[dict[str, Any]] = []
    results: list[Any] = []
    url = env.hub_url
    options: dict[str, Any] = {"access_token_factory": lambda: t.key}
    if long_polling:
        # Its polls carry no Authorization header: the key must be in the URL as well.
        url += f"?access_token={t.key}"
        options["transport"] = HttpTransportType.long_polling
    hub = HubConnectionBuilder().with_url(url, options=options).build()
    hub.on_open(opened.set)

    def on_expired(args: list[dict[str, Any]]) -> None:
        received.append(args[0])
        got.set()

    hub.on("PendingChangeExpired", on_expired)

    def on_subscribed(message: Any) -> None:
        results.append(message.result)
        subscribed.set()

    try:
        await anyio.to_thread.run_sync(hub.start)
        assert await anyio.to_thread.run_sync(opened.wait, 10)
        # A long-polling send is a blocking HTTP request: not on the server's event loop.
        await anyio.to_thread.run_sync(
            lambda: hub.send("SubscribeToPendingChange", [cid], on_invocation=on_subscribed))
        assert await anyio.to_thread.run_sync(subscribed.wait, 10)
        await env.expire_now(cid)
        assert await anyio.to_thread.run_sync(got.wait, 10)
    finally:
        # signalrcore's stop() joins a thread blocked in recv(): it returns once the
        # server sends anything, so a short keep-alive keeps this test short.
        await anyio.to_thread.run_sync(hub.stop)
    assert results[0]["status"] == "Pending"
    assert received[0]["pendingChangeId"] == cid and received[0]["status"] == "Expired"
