"""The MCP subscribers' queues: a legacy session holds no task while idle, sends in order,
stops when closed; a listen stream drains what is queued and ends when closed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server.streamable_http import GET_STREAM_KEY

from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.mcp.subscriptions import LegacySession, ListenStream

pytestmark = pytest.mark.anyio

PRINCIPAL = Principal(kind="agent", tenant_id="t1", tenant_slug="acme", api_key_id="k1")


def event(change_id: str) -> DecisionEvent:
    return DecisionEvent(change_id=change_id, tenant_id="t1", status="Approved", payload={},
                         committed_at=None)


class Outbound:
    """A session's event store as the session sees it: records the updates stored for its
    GET stream; each store waits until ``gate`` is set."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = anyio.Event()
        self.first_started = anyio.Event()
        self._changed = anyio.Event()

    async def store_event(self, stream_id: str, message: types.JSONRPCNotification) -> str:
        assert stream_id == GET_STREAM_KEY
        assert message.method == "notifications/resources/updated"
        self.first_started.set()
        await self.gate.wait()
        assert message.params is not None
        self.sent.append(message.params["uri"])
        self._changed.set()
        self._changed = anyio.Event()
        return f"g{len(self.sent)}"

    def __call__(self, session_id: str) -> Outbound:
        return self  # ``store_of``: the store of the session

    async def wait_sent(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.sent) < count:
                await self._changed.wait()


class Spawner:
    """A ``spawn`` that counts the senders started, in a task group."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.tg = tg
        self.started = 0

    def __call__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.started += 1
        self.tg.start_soon(fn)


async def test_a_legacy_session_starts_one_sender_per_burst_and_none_while_idle() -> None:
    outbound = Outbound()
    async with anyio.create_task_group() as tg:
        spawn = Spawner(tg)
        session = LegacySession("s1", PRINCIPAL, outbound, 10, spawn)  # type: ignore[arg-type]
        assert spawn.started == 0  # subscribed, idle: no task
        with anyio.fail_after(5):
            session.deliver(event("a"))
            await outbound.first_started.wait()  # the sender is inside its first send
            session.deliver(event("b"))
            session.deliver(event("c"))
            assert spawn.started == 1  # the running sender takes b and c too
            outbound.gate.set()
        await outbound.wait_sent(3)
        assert outbound.sent == ["colaflow://pending-changes/a", "colaflow://pending-changes/b",
                                 "colaflow://pending-changes/c"]
        await anyio.wait_all_tasks_blocked()
        assert not session._sending  # the sender ended: idle again, no task
        session.deliver(event("d"))
        assert spawn.started == 2
        await outbound.wait_sent(4)
        assert outbound.sent[-1] == "colaflow://pending-changes/d"


async def test_a_closed_legacy_session_sends_nothing_more() -> None:
    outbound = Outbound()
    outbound.gate.set()
    async with anyio.create_task_group() as tg:
        spawn = Spawner(tg)
        session = LegacySession("s1", PRINCIPAL, outbound, 10, spawn)  # type: ignore[arg-type]
        session.close()
        session.deliver(event("a"))
        await anyio.wait_all_tasks_blocked()
    assert spawn.started == 0
    assert outbound.sent == []


async def test_the_queue_holds_one_entry_per_watched_change_and_one_more() -> None:
    outbound = Outbound()
    async with anyio.create_task_group() as tg:
        spawn = Spawner(tg)
        session = LegacySession("s1", PRINCIPAL, outbound, 2, spawn)  # type: ignore[arg-type]
        with anyio.fail_after(5):
            session.deliver(event("a"))
            await outbound.first_started.wait()  # "a" is out of the queue, being sent
            for change_id in "bcde":
                session.deliver(event(change_id))
        assert [uri[-1] for uri, _ in session.queue] == ["b", "c", "d"]  # "e" dropped
        outbound.gate.set()


async def test_a_listen_stream_drains_what_is_queued_then_ends_when_closed() -> None:
    stream = ListenStream(PRINCIPAL, 5)
    received: list[str] = []

    async def consume() -> None:
        async for uri, _ in stream.updates():
            received.append(uri)

    stream.deliver(event("a"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert received == ["colaflow://pending-changes/a"]  # then it waits
            stream.deliver(event("b"))
            stream.deliver(event("c"))
            stream.close()  # what is queued is still sent, then the stream ends
    assert [uri[-1] for uri in received] == ["a", "b", "c"]
