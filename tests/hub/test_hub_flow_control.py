"""What one connection holds for its client: the byte bound, and flow control on its input.

Pure connection tests (no sockets); the same behaviour over real TCP is in
test_hub_slow_clients.py.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub.connection import HubConnection, HubError, Transport
from colaflow_mcp.hub.outbound import Limits

pytestmark = pytest.mark.anyio

RS = p.RS
HANDSHAKE = '{"protocol":"json","version":1}' + RS


class FailingHub:
    """Every method fails at once, without awaiting: the cheapest way to make output."""

    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        raise HubError("no such method")

    def closed(self, conn: HubConnection) -> None:
        pass


def make_conn(*, queue: int = 1024, max_bytes: int = 1 << 20,
              drain_timeout: float = 30.0) -> HubConnection:
    conn = HubConnection(
        connection_id="c", token="t", hub=FailingHub(),
        principal=Principal(kind="agent", tenant_id="t1", tenant_slug="t", api_key_id="k"),
        limits=Limits(max_message_bytes=1 << 20, outbound_queue_size=queue,
                      max_queued_bytes=max_bytes, drain_timeout=drain_timeout),
    )
    conn.attach(Transport.WEBSOCKETS)
    return conn


def decoded(frames: list[str]) -> list[dict[str, Any]]:
    return [json.loads(f[:-1]) for f in frames]


def invocations(n: int) -> str:
    """One transport message holding ``n`` invocations that each get a completion."""
    return "".join(json.dumps({"type": 1, "invocationId": str(i), "target": "Nope",
                               "arguments": []}) + RS for i in range(n))


async def test_queued_bytes_over_the_limit_close_the_client_and_drop_its_queue() -> None:
    conn = make_conn(max_bytes=4000)
    await conn.receive(HANDSHAKE)
    conn.take()
    conn.written()
    big = p.invocation("PendingChangeApproved", [{"note": "x" * 1500}])
    conn.send(big)
    conn.send(big)
    assert not conn.closed and conn.queued_bytes == 2 * len(big)
    conn.send(big)  # would hold more than 4000 bytes
    assert conn.closed and conn.slow
    # What was queued is dropped: the Close, saying why, is the next thing sent.
    [close] = decoded(conn.take())
    assert close["type"] == 7 and close["allowReconnect"] is True
    assert "did not read its messages" in close["error"] and "4000 bytes" in close["error"]
    assert conn.queued_bytes == 0


async def test_bytes_taken_by_the_transport_count_until_written() -> None:
    conn = make_conn(max_bytes=4000)
    await conn.receive(HANDSHAKE)
    big = p.invocation("PendingChangeApproved", [{"note": "x" * 1500}])
    conn.send(big)
    conn.take()  # a writer took it and is blocked sending it
    conn.send(big)
    assert conn.queued_bytes >= 2 * len(big)
    conn.send(big)
    assert conn.closed  # the taken frame still counted


async def test_stateful_replay_counts_until_acknowledged() -> None:
    conn = make_conn(max_bytes=6000)
    conn.stateful_allowed = True
    await conn.receive('{"protocol":"json","version":2}' + RS)
    assert conn.stateful
    big = p.invocation("PendingChangeApproved", [{"note": "x" * 1500}])
    for _ in range(2):  # the client reads everything but never acknowledges
        conn.send(big)
        conn.take()
        conn.written()
    assert conn.queued_bytes == 2 * len(big)
    await conn.receive('{"type":8,"sequenceId":2}' + RS)  # now it does
    assert conn.queued_bytes == 0
    for _ in range(2):
        conn.send(big)
        conn.take()
        conn.written()
    conn.send(big)  # a third unacknowledged one would pass the limit
    assert conn.closed
    [close] = decoded(conn.take())
    assert "did not acknowledge its messages" in close["error"]


async def test_a_reader_gets_every_completion_of_a_frame_larger_than_the_queue() -> None:
    conn = make_conn(queue=64)
    got: list[dict[str, Any]] = []

    async def transport() -> None:  # a client that reads promptly
        while not conn.closed:
            await conn.wait_outbound()
            got.extend(decoded(conn.take()))
            conn.written()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport)
            await conn.receive(HANDSHAKE + invocations(1000))
            assert not conn.closed
            conn.close()
    got.extend(decoded(conn.take()))
    completions = [m for m in got if m.get("type") == 3]
    assert [m["invocationId"] for m in completions] == [str(i) for i in range(1000)]
    assert all(m["error"] == "no such method" for m in completions)
    assert conn.close_error is None


async def test_input_waits_for_the_transport_and_gives_up_after_the_drain_timeout() -> None:
    conn = make_conn(queue=64, drain_timeout=0.2)
    with anyio.fail_after(5):
        await conn.receive(HANDSHAKE + invocations(1000))  # nobody takes anything
    assert conn.closed and conn.slow
    assert "did not drain within 0.2 s" in (conn.close_error or "")
    [close] = decoded(conn.take())
    assert close["type"] == 7 and close["error"] == conn.close_error


async def test_a_paused_connection_is_not_timed_out_for_silence() -> None:
    conn = make_conn(queue=64)
    done = anyio.Event()
    frames: list[str] = []

    async def client_sends() -> None:
        await conn.receive(HANDSHAKE + invocations(100))
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client_sends)
            await anyio.wait_all_tasks_blocked()
            assert conn.queued == 32  # paused at the high-water mark (half of 64)
            conn.tick(conn.last_received + 60, keep_alive=15, client_timeout=30,
                      handshake_timeout=15, disconnect_timeout=15)
            assert not conn.closed
            while not done.is_set():  # the transport drains: input goes on
                frames.extend(conn.take())
                conn.written()
                await anyio.wait_all_tasks_blocked()
    frames.extend(conn.take())
    assert not conn.closed
    assert sum(1 for m in decoded(frames) if m.get("type") == 3) == 100
