"""Real clients over TCP that read slowly, never, or promptly: the server's memory bound, the
Close it sends a client that does not read, and flow control for one that does."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from typing import Any

import anyio
import httpx
import pytest
from hubenv import HubEnv, ServerFactory, Tenant
from hubwire import HANDSHAKE, RS, RawWs, frames, msg, open_ws
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.anyio

DESCRIPTION = secrets.token_hex(25_000)  # 50,000 characters that do not compress


async def big_change(env: HubEnv, t: Tenant) -> str:
    change = await env.runtime.changes.propose(
        t.agent, "create_issue",
        {"project_key": "WEB", "title": "Big", "description": DESCRIPTION})
    return str(change.id)


async def unread_socket(env: HubEnv, key: str) -> ClientConnection:
    """A handshaken WebSocket whose client will not read: a 4 KiB receive buffer, and a
    client library that buffers at most one message before it stops reading the socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", env.port))
    ws = await connect(f"{env.ws_url}?access_token={key}", sock=sock, max_size=None,
                       max_queue=1, compression=None, open_timeout=5)
    await ws.send(HANDSHAKE)
    assert await ws.recv() == "{}" + RS
    return ws


def subscribe_calls(change_ids: list[str], n: int) -> str:
    """One WebSocket message holding ``n`` subscribe invocations."""
    return "".join(msg({"type": 1, "invocationId": str(i), "target": "SubscribeToPendingChange",
                        "arguments": [change_ids[i % len(change_ids)]]}) for i in range(n))


async def test_a_client_that_never_reads_is_closed_within_the_byte_bound(
    server_factory: ServerFactory,
) -> None:
    cap = 1 << 20
    async with server_factory(hub_max_queued_bytes=cap, hub_drain_timeout_seconds=1.0) as env:
        t = await env.tenant("acme")
        ids = [await big_change(env, t) for _ in range(4)]
        ws = await unread_socket(env, t.key)
        [conn] = [c for c in env.hub.connections.values() if not c.closed]
        # Every frame queued for this client passes through on_change: watch the bound.
        peak = 0
        inner = conn.on_change
        assert inner is not None

        def watch() -> None:
            nonlocal peak
            peak = max(peak, conn.queued_bytes)
            inner()

        conn.on_change = watch
        # 400 snapshots of ~150 KB each would be ~60 MB; the client reads none of them.
        sent = 400
        await ws.send(subscribe_calls(ids, sent))
        with anyio.fail_after(15):
            await conn.closed_event.wait()
        assert conn.slow and "did not read its messages" in (conn.close_error or "")
        assert 0 < peak <= cap
        assert conn.queued_bytes == 0  # dropped at once, not when the socket ends

        # Read it afterwards: what was already in the socket buffers, then the Close.
        received: list[dict[str, Any]] = []
        with anyio.fail_after(15):
            while not any(m.get("type") == 7 for m in received):
                received.extend(frames(str(await ws.recv())))
        close = received[-1]
        assert close == {"type": 7, "error": conn.close_error, "allowReconnect": True}
        # Flow control stopped running its invocations long before the end of the frame.
        assert sum(1 for m in received if m.get("type") == 3) < sent // 4
        with anyio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1000
        # Nothing else was disturbed.
        other = await open_ws(env.ws_url, t.key)
        assert "error" not in await other.invoke("SubscribeToPendingChange", ids[0])


async def read_completions(ws: RawWs, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        item = await ws.next(within=20)
        if item.get("type") == 3:
            got.append(item)
    return got


@pytest.mark.parametrize("stateful", [False, True], ids=["plain", "stateful"])
async def test_a_client_that_reads_gets_every_completion_of_a_huge_frame(
    env: HubEnv, stateful: bool,
) -> None:
    t = await env.tenant("acme")
    if stateful:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1"
                                "&useStatefulReconnect=true",
                                headers={"Authorization": f"Bearer {t.key}"})
        ws = await open_ws(env.ws_url, t.key, query=f"id={r.json()['connectionToken']}",
                           handshake=False)
        await ws.send(json.dumps({"protocol": "json", "version": 2}) + RS)
        assert await ws.next() == {}
    else:
        ws = await open_ws(env.ws_url, t.key)
    n = 1500  # more than the 1,024 messages a connection may queue
    await ws.send("".join(msg({"type": 1, "invocationId": str(i), "target": "NoSuchMethod",
                               "arguments": []}) for i in range(n)))
    got = await read_completions(ws, n)
    assert [m["invocationId"] for m in got] == [str(i) for i in range(n)]
    assert all("Unknown hub method" in m["error"] for m in got)
    [conn] = [c for c in env.hub.connections.values() if not c.closed]
    assert conn.stateful is stateful
    assert "error" not in await ws.invoke("UnsubscribeFromPendingChange",
                                          "00000000-0000-0000-0000-000000000000",
                                          invocation_id="last")


async def test_a_long_polling_client_gets_every_completion_of_a_huge_send(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    n = 1100
    body = "".join(msg({"type": 1, "invocationId": str(i), "target": "NoSuchMethod",
                        "arguments": []}) for i in range(n))
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {t.key}"},
                                 timeout=20) as http:
        r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1")
        url = f"{env.hub_url}?id={r.json()['connectionToken']}"
        await http.get(url)
        await http.post(url, content=HANDSHAKE)
        assert (await http.get(url)).text == "{}" + RS
        statuses: list[int] = []

        async def send() -> None:  # held while the polls below drain what it produces
            statuses.append((await http.post(url, content=body)).status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                while sum(1 for m in got if m.get("type") == 3) < n:
                    poll = await http.get(url)
                    assert poll.status_code == 200
                    got.extend(frames(poll.text))
    assert statuses == [200]
    completions = [m for m in got if m.get("type") == 3]
    assert [m["invocationId"] for m in completions] == [str(i) for i in range(n)]


async def test_a_server_sent_events_client_gets_every_completion_of_a_huge_send(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    n = 1100
    body = "".join(msg({"type": 1, "invocationId": str(i), "target": "NoSuchMethod",
                        "arguments": []}) for i in range(n))
    got: list[dict[str, Any]] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {t.key}"},
                                 timeout=20) as http:
        r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1")
        url = f"{env.hub_url}?id={r.json()['connectionToken']}"
        async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as stream:
            assert (await http.post(url, content=HANDSHAKE)).status_code == 200

            async def send() -> None:  # held while the stream drains what it produces
                statuses.append((await http.post(url, content=body)).status_code)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send)
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            got.extend(frames(line[len("data: "):]))
                        if sum(1 for m in got if m.get("type") == 3) == n:
                            break
    assert statuses == [200]
    completions = [m for m in got if m.get("type") == 3]
    assert [m["invocationId"] for m in completions] == [str(i) for i in range(n)]
