"""The WebSocket transport's writer: started on demand, bounded once the connection closes."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from starlette.websockets import WebSocketState

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub import websockets as ws
from colaflow_mcp.hub.connection import HubConnection
from colaflow_mcp.hub.outbound import Limits

RS = "\x1e"


class FakeHub:
    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        return None

    def closed(self, conn: HubConnection) -> None:
        pass


class FakeSocket:
    """Reads block until ``disconnect``; sends block while ``stalled`` (a client that stopped
    reading: its TCP window is full)."""

    def __init__(self) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.stalled = False
        self.gate: anyio.Event | None = None  # sends wait for it while set
        self._inbound_send, self._inbound = anyio.create_memory_object_stream[dict[str, Any]](10)

    async def receive(self) -> dict[str, Any]:
        return await self._inbound.receive()

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await anyio.sleep_forever()
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(text)

    async def close(self, code: int) -> None:
        self.close_code = code
        self.application_state = WebSocketState.DISCONNECTED


def make(flush_grace: float = 1.0) -> tuple[HubConnection, FakeSocket, ws._Socket]:
    conn = HubConnection(
        connection_id="c", token="t", hub=FakeHub(),
        principal=Principal(kind="agent", tenant_id="t1", tenant_slug="t", api_key_id="k"),
        limits=Limits(max_message_bytes=1024, outbound_queue_size=4),
    )
    generation, _ = conn.attach_socket()
    fake = FakeSocket()
    sock = ws._Socket(fake, conn, generation, flush_grace)  # type: ignore[arg-type]
    assert conn.bind_socket(generation, sock.changed, sock.supersede)
    return conn, fake, sock


@pytest.mark.anyio
async def test_writer_runs_only_while_there_is_something_to_send() -> None:
    conn, fake, sock = make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sock.run)
        await conn.receive('{"protocol":"json","version":1}' + RS)
        # Written as it was queued (the writer's first step ran in place): no task.
        assert sock.writer is None and fake.sent == ["{}" + RS]
        conn.send(p.PING)
        await anyio.wait_all_tasks_blocked()
        assert sock.writer is None and fake.sent[-1] == p.PING
        assert conn._changed is None and conn._closed_event is None
        conn.close("bye")
        await anyio.wait_all_tasks_blocked()
        assert not sock.active and fake.close_code == ws.CLOSE_NORMAL
        assert '"type":7' in fake.sent[-1]
        assert not tg.cancel_scope.cancel_called
    assert conn.drained.is_set() and conn.closed_event.is_set()


@pytest.mark.anyio
async def test_a_stalled_send_is_cut_off_after_the_flush_grace() -> None:
    conn, fake, sock = make(flush_grace=0.2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sock.run)
            await conn.receive('{"protocol":"json","version":1}' + RS)
            await anyio.wait_all_tasks_blocked()
            fake.stalled = True
            conn.send(p.PING)  # the writer blocks in this send
            await anyio.wait_all_tasks_blocked()
            assert sock.writer is not None
            for _ in range(5):  # the queue overflows: the slow client is closed
                conn.send(p.PING)
            assert conn.closed
            t0 = time.monotonic()
        # The reader (sock.run) ended because the writer gave up after the grace.
        assert 0.15 < time.monotonic() - t0 < 2
    assert sock.writer is None and not sock.active


@pytest.mark.anyio
async def test_a_frame_is_on_the_wire_when_it_is_queued() -> None:
    """No loop iteration between queueing and writing: a decision's event is written
    before the code that delivered it goes on (e.g. to its HTTP response)."""
    conn, fake, sock = make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sock.run)
        await conn.receive('{"protocol":"json","version":1}' + RS)
        for n in range(3):
            conn.send(p.PING)
            assert fake.sent[-1] == p.PING and len(fake.sent) == 2 + n  # no await between
            assert sock.writer is None
        conn.close("bye")
        await anyio.wait_all_tasks_blocked()
        assert fake.close_code == ws.CLOSE_NORMAL and '"type":7' in fake.sent[-1]


@pytest.mark.anyio
async def test_a_send_that_waits_is_carried_on_by_a_task_in_order() -> None:
    """When the first step has to wait (the transport is not writable), a task takes the
    same writer over: frames queued meanwhile follow in order, then it ends."""
    conn, fake, sock = make()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sock.run)
            await conn.receive('{"protocol":"json","version":1}' + RS)
            fake.gate = anyio.Event()
            conn.send(p.completion_result("1", "a"))
            assert sock.writer is not None and len(fake.sent) == 1  # waiting in its send
            conn.send(p.completion_result("2", "b"))
            conn.send(p.completion_result("3", "c"))
            await anyio.wait_all_tasks_blocked()
            assert len(fake.sent) == 1 and sock.writer is not None
            fake.gate.set()
            await anyio.wait_all_tasks_blocked()
            assert fake.sent[1:] == [p.completion_result(i, v)
                                     for i, v in (("1", "a"), ("2", "b"), ("3", "c"))]
            assert sock.writer is None and conn.queued == 0
            fake.gate = None
            conn.send(p.PING)  # idle again: written in place
            assert fake.sent[-1] == p.PING and sock.writer is None
            conn.close("bye")
    assert not sock.active and fake.close_code == ws.CLOSE_NORMAL
