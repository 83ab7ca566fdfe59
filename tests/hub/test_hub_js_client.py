"""Interop: the official ``@microsoft/signalr`` client, under node, on each transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from hubenv import HubEnv, ServerFactory, Tenant

from tests.harness import SAFETY_NETS_ON, recovery_passes

pytestmark = [pytest.mark.anyio, pytest.mark.node]

JS_DIR = Path(__file__).resolve().parents[1] / "js"
TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"]


class NodeClient:
    """The JS driver (tests/js/hub_client.mjs): JSON lines out, commands in."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._buffer = ""
        assert process.stdout is not None
        self._stdout = TextReceiveStream(process.stdout)

    async def command(self, **cmd: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(cmd) + "\n").encode())

    async def expect(self, pred: Callable[[dict[str, Any]], bool],
                     within: float = 15.0) -> dict[str, Any]:
        """The first line (read so far or next) matching ``pred``."""
        for line in self.lines:
            if pred(line):
                return line
        with anyio.fail_after(within):
            while True:
                chunk = await self._stdout.receive()
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split("\n")
                for raw in complete:
                    if not raw.strip():
                        continue
                    line = json.loads(raw)
                    self.lines.append(line)
                    if pred(line):
                        return line

    def events(self, change_id: str | None = None) -> list[dict[str, Any]]:
        return [x for x in self.lines if "event" in x and (
            change_id is None or x["payload"]["pendingChangeId"] == change_id)]

    async def subscribe(self, change_id: str) -> dict[str, Any]:
        await self.command(cmd="subscribe", id=change_id)
        return await self.expect(
            lambda x: x.get("subscribed") == change_id or x.get("subscribeError") == change_id)

    async def roundtrip(self, n: int) -> None:
        await self.command(cmd="roundtrip", n=n)
        await self.expect(lambda x: x.get("roundtrip") == n)


@asynccontextmanager
async def node_client(env: HubEnv, t: Tenant, transport: str,
                      mode: str = "") -> AsyncIterator[NodeClient]:
    process = await anyio.open_process(
        ["node", str(JS_DIR / "hub_client.mjs"), env.hub_url, t.key, transport, mode],
        cwd=JS_DIR, stderr=None,
    )
    client = NodeClient(process)
    try:
        await client.expect(lambda x: x.get("state") == "connected")
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await client.command(cmd="stop")
                with anyio.fail_after(5):
                    await process.wait()
            except Exception:
                process.kill()
                await process.wait()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_official_js_client_receives_its_decisions_only(
    env: HubEnv, transport: str, node_ready: None
) -> None:
    a, b = await env.tenant("acme"), await env.tenant("bolt")
    approved, rejected, expired, unwatched = [await env.propose(a, f"t{i}") for i in range(4)]
    foreign = await env.propose(b)
    async with node_client(env, a, transport) as js:
        for cid in (approved, rejected, expired):
            assert (await js.subscribe(cid))["status"] == "Pending"
        refused = await js.subscribe(foreign)
        assert "pending change not found" in refused["error"]

        await env.approve(a, unwatched)
        await env.approve(b, foreign)
        await env.approve(a, approved)
        await env.reject(a, rejected, "needs a test plan")
        await env.expire_now(expired)
        await js.expect(lambda x: x.get("event") == "PendingChangeExpired")
        await js.roundtrip(1)

    events = {e["event"]: e["payload"] for e in js.events()}
    assert len(js.events()) == 3, js.events()
    ok = events["PendingChangeApproved"]
    assert ok["pendingChangeId"] == approved and ok["status"] == "Approved"
    assert ok["executionResult"]["success"] is True and ok["executionResult"]["entityId"]
    no = events["PendingChangeRejected"]
    assert no["pendingChangeId"] == rejected and no["reason"] == "needs a test plan"
    assert events["PendingChangeExpired"]["pendingChangeId"] == expired


async def test_js_client_killed_mid_wait_gets_the_decision_exactly_once(
    server_factory: ServerFactory, node_ready: None
) -> None:
    # Safety nets on: exactly once must hold across them too.
    async with server_factory(**SAFETY_NETS_ON) as env:
        t = await env.tenant("acme")
        cid = await env.propose(t)
        async with node_client(env, t, "WebSockets") as js:
            await js.subscribe(cid)
            [old] = [c for c in env.hub.connections.values() if not c.closed]
            await js.command(cmd="kill")
            await js.expect(lambda x: x.get("state") == "reconnecting")
            with anyio.fail_after(5):
                await old.closed_event.wait()
            # Decided while the client is away: no live connection could receive it.
            assert not [c for c in env.hub.connections.values() if not c.closed]
            await env.approve(t, cid)
            await js.expect(lambda x: x.get("state") == "reconnected")
            await js.expect(lambda x: x.get("event") == "PendingChangeApproved")
            await settled(env, js)
        assert len(js.events(cid)) == 1


async def settled(env: HubEnv, js: NodeClient) -> None:
    """Past the point where a second delivery would show: whole sweep and reconcile passes
    after the event, then a round trip behind anything they sent."""
    await recovery_passes(env.runtime)
    await js.roundtrip(99)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_js_client_reconnects_after_server_close_with_allow_reconnect(
    server_factory: ServerFactory, node_ready: None, transport: str
) -> None:
    async with server_factory(**SAFETY_NETS_ON) as env:
        t = await env.tenant("acme")
        cid = await env.propose(t)
        async with node_client(env, t, transport) as js:
            await js.subscribe(cid)
            for conn in list(env.hub.connections.values()):
                conn.close("maintenance", allow_reconnect=True)
            await js.expect(lambda x: x.get("state") == "reconnecting")
            await js.expect(lambda x: x.get("state") == "reconnected")
            await js.expect(lambda x: x.get("subscribed") == cid and len(
                [y for y in js.lines if y.get("subscribed") == cid]) == 2)
            await env.reject(t, cid, "later")
            await js.expect(lambda x: x.get("event") == "PendingChangeRejected")
            await settled(env, js)
        assert len(js.events(cid)) == 1


async def test_stateful_reconnect_is_transparent_and_exactly_once(
    server_factory: ServerFactory, node_ready: None
) -> None:
    async with server_factory(**SAFETY_NETS_ON) as env:
        t = await env.tenant("acme")
        first, second = await env.propose(t, "one"), await env.propose(t, "two")
        async with node_client(env, t, "WebSockets", "stateful") as js:
            await js.subscribe(first)
            await js.subscribe(second)
            [conn] = [c for c in env.hub.connections.values() if not c.closed]
            assert conn.stateful
            await env.approve(t, first)
            await js.expect(lambda x: x.get("event") == "PendingChangeApproved")
            # Drop the socket at once, most likely before the client acknowledged the
            # event: the server replays it and the client discards the duplicate.
            await js.command(cmd="kill")
            await js.expect(lambda x: x.get("killed") is True)
            await env.reject(t, second, "while away")
            await js.expect(lambda x: x.get("event") == "PendingChangeRejected")
            await settled(env, js)
            assert [c for c in env.hub.connections.values() if not c.closed] == [conn]
        assert len(js.events(first)) == 1 and len(js.events(second)) == 1
        assert not [x for x in js.lines if x.get("state") == "reconnecting"]
