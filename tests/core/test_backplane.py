"""The backplane's lean paths: an instance skips its own messages (it dispatched them
before publishing) but hears every other instance's; a publisher batch goes out at once,
and what was not surely published is left to the announce sweep; messages of the previous
release are read, and it can read ours."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import anyio
import pytest
import redis.asyncio as aioredis
from sqlmodel import col, select

from colaflow_mcp.delivery.backplane import RedisBackplane, route_of
from colaflow_mcp.delivery.events import DecisionEvent, event_from_change
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.delivery.recovery import Recovery
from colaflow_mcp.domain import admin
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, Status, utcnow
from tests.harness import REDIS_URL, redis_address, redis_url_at, require_service
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.anyio


def decided(cid: str, tenant: str = "t1") -> DecisionEvent:
    return DecisionEvent(cid, tenant, Status.APPROVED.value, {"pendingChangeId": cid},
                         committed_at=1_700_000_000.5)


def created(cid: str, tenant: str = "t1") -> DecisionEvent:
    return DecisionEvent(cid, tenant, Status.PENDING.value, {"id": cid})


class Heard:
    """What one instance's listener handed to its notifier."""

    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []
        self.changed = anyio.Event()

    def __call__(self, event: DecisionEvent) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, count: int) -> list[DecisionEvent]:
        with anyio.fail_after(10):
            while len(self.events) < count:
                await self.changed.wait()
        return self.events


@pytest.fixture
async def instances() -> AsyncIterator[list[tuple[RedisBackplane, Heard]]]:
    """Two instances' Redis backplanes on a channel of this test's own, listening."""
    require_service("Redis", *redis_address())
    channel = f"colaflow:test:{uuid.uuid4().hex}"
    pairs = [(RedisBackplane(REDIS_URL, channel=channel), Heard()) for _ in range(2)]
    async with anyio.create_task_group() as tg:
        for bus, heard in pairs:
            tg.start_soon(bus.run, heard, _ignore_reconnect)
        with anyio.fail_after(10):
            for bus, _ in pairs:
                while not bus.healthy:
                    await bus.link_changed.wait()
        try:
            yield pairs
        finally:
            tg.cancel_scope.cancel()
    for bus, _ in pairs:
        await bus.aclose()


async def _ignore_reconnect(_: datetime | None) -> None:
    pass


@pytest.mark.redis
async def test_an_instance_skips_its_own_messages_and_hears_the_others(
    instances: list[tuple[RedisBackplane, Heard]],
) -> None:
    (a, heard_a), (b, heard_b) = instances
    await a.publish(decided("from-a"))
    await b.publish_many([decided("from-b"), created("new-on-b")])
    # A's own message reached A's listener before B's (one connection, in order).
    assert [e.change_id for e in await heard_a.until(2)] == ["from-b", "new-on-b"]
    assert [e.change_id for e in await heard_b.until(1)] == ["from-a"]
    assert heard_a.events[0] == decided("from-b")
    assert heard_a.events[1].created
    assert a.own_skipped == 1
    # B's own two echoes come before a marker A publishes now (Redis keeps publish order).
    await a.publish(decided("marker"))
    assert [e.change_id for e in await heard_b.until(2)] == ["from-a", "marker"]
    assert b.own_skipped == 2


@pytest.mark.redis
async def test_a_batch_reaches_the_other_instance_whole_and_in_order(
    instances: list[tuple[RedisBackplane, Heard]],
) -> None:
    (a, heard_a), (b, heard_b) = instances
    batch = [decided(f"d{i}") if i % 3 else created(f"c{i}") for i in range(50)]
    assert await a.publish_many(batch) == batch
    got = await heard_b.until(50)
    # Decisions and creations travel on two channels: each in its own order.
    assert [e for e in got if e.created] == [e for e in batch if e.created]
    assert [e for e in got if not e.created] == [e for e in batch if not e.created]
    # B hearing the batch does not mean A has read its own echoes yet: a marker B
    # publishes now reaches A's connection after all of them (Redis keeps publish order).
    await b.publish(decided("marker"))
    assert [e.change_id for e in await heard_a.until(1)] == ["marker"]
    assert a.own_skipped == 50


@pytest.mark.redis
async def test_a_message_of_the_previous_release_is_read_and_it_can_read_ours(
    instances: list[tuple[RedisBackplane, Heard]],
) -> None:
    (a, heard_a), (b, _) = instances
    # Exactly what the previous release (no origin) publishes for a decision.
    old = ('{"changeId":"old-1","tenantId":"t1","status":"Approved",'
           '"payload":{"pendingChangeId":"old-1"},"committedAt":1700000000.5}')
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.publish(a.channel, old)
    finally:
        await client.aclose()
    assert await heard_a.until(1) == [decided("old-1")]
    # What we publish, parsed as the previous release parses it (the keys it reads).
    ours = json.loads(decided("new-1").to_json(b.origin))
    assert {k: ours[k] for k in ("changeId", "tenantId", "status", "payload")} == {
        "changeId": "new-1", "tenantId": "t1", "status": "Approved",
        "payload": {"pendingChangeId": "new-1"}}
    assert DecisionEvent.from_json(decided("new-1").to_json(b.origin)) == decided("new-1")


@pytest.mark.redis
async def test_a_link_gone_silent_is_noticed_by_the_liveness_ping_and_reconnected() -> None:
    """An idle link is pinged and stays up; when Redis stops answering but the connection
    stays open (no reset), the listener gives up within its liveness bound, and comes back
    once Redis answers again, hearing the other instance as before."""
    require_service("Redis", *redis_address())
    channel = f"colaflow:test:{uuid.uuid4().hex}"
    proxy = TcpProxy(*redis_address())
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.run)
        bus = RedisBackplane(redis_url_at("127.0.0.1", proxy.port), channel=channel,
                             liveness_seconds=1.0, max_backoff=0.2)
        other = RedisBackplane(REDIS_URL, channel=channel)
        heard = Heard()
        tg.start_soon(bus.run, heard, _ignore_reconnect)
        with anyio.fail_after(10):
            while not bus.healthy:
                await bus.link_changed.wait()
        # Idle for three times the bound: the pings keep a live link up.
        with anyio.move_on_after(3.0):
            await bus.link_changed.wait()
        assert bus.healthy and bus.reconnects == 0
        proxy.silence()
        with anyio.fail_after(5):  # 1 s of silence, checked every 1/3 s
            while bus.healthy:
                await bus.link_changed.wait()
        assert bus.status()["lastError"] == "ConnectionError"
        proxy.restore()
        with anyio.fail_after(10):
            while not bus.healthy:
                await bus.link_changed.wait()
        await other.publish(decided("after"))
        assert await heard.until(1) == [decided("after")]
        tg.cancel_scope.cancel()
    await bus.aclose()
    await other.aclose()


# -- the outbox and the sweep around a batch ------------------------------------------------


class Subscriber:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.got: list[str] = []

    def deliver(self, event: DecisionEvent) -> None:
        self.got.append(event.change_id)


class Flaky:
    """A backplane to another instance: batches go through ``publish_many`` only, and the
    events named in ``refuse`` get an error reply (``down``: the link is lost)."""

    name = "flaky"
    healthy = True

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.refuse = refuse or set()
        self.down = False
        self.batches: list[list[str]] = []

    async def run(self, on_event: object, on_reconnect: object) -> None:
        await anyio.sleep_forever()

    def status(self) -> dict[str, object]:
        return {"backplane": self.name}

    async def aclose(self) -> None:
        pass

    async def publish(self, event: DecisionEvent) -> None:
        raise AssertionError("a batch is published at once, not event by event")

    async def publish_many(self, events: Sequence[DecisionEvent]) -> list[DecisionEvent]:
        if self.down:
            raise ConnectionError("redis is gone")
        self.batches.append([e.change_id for e in events])
        return [e for e in events if e.change_id not in self.refuse]


async def _decided_rows(db: Database, tenant_id: str, n: int) -> list[PendingChange]:
    """``n`` approved, never-announced changes, decided a minute ago."""
    when = utcnow() - timedelta(minutes=1)
    rows = [PendingChange(
        tenant_id=tenant_id, tool_name="create_issue", operation="create", entity_type="issue",
        arguments={"project_key": "WEB", "title": f"t{i}"}, summary=f"t{i}",
        status=Status.APPROVED.value, decided_by="rita", decided_at=when,
        execution_result={"success": True, "entityId": None, "error": None},
        created_at=when, expires_at=when + timedelta(hours=1)) for i in range(n)]
    async with db.write() as s:
        s.add_all(rows)
    async with db.read() as s:
        ids = [r.id for r in rows]
        return list((await s.exec(select(PendingChange)
                                  .where(col(PendingChange.id).in_(ids)))).all())


async def _announced(db: Database, ids: list[str]) -> list[bool]:
    async with db.read() as s:
        rows = {r.id: r for r in (await s.exec(
            select(PendingChange).where(col(PendingChange.id).in_(ids)))).all()}
    return [rows[i].announced_at is not None for i in ids]


async def test_a_batch_is_published_at_once_and_only_what_went_out_is_marked(
    db: Database,
) -> None:
    """The second of three gets an error reply: the other two are marked announced, it
    is left to the announce sweep, which publishes it (and only it); each subscriber got
    each decision once."""
    tenant = await admin.get_or_create_tenant(db, f"bp-{uuid.uuid4().hex[:8]}")
    rows = await _decided_rows(db, tenant.id, 3)
    ids = [r.id for r in rows]
    notifier = Notifier(db)
    subscriber = Subscriber(tenant.id)
    for cid in ids:
        notifier.register(subscriber, cid)
    bus = Flaky(refuse={ids[1]})
    outbox = Outbox(db, notifier, bus, marker_linger_seconds=0.0)
    for row in rows:
        await outbox.announce(row)
    outbox.close()  # the publisher drains the batch, then the marker, then both return
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run_publisher)
            tg.start_soon(outbox.run_marker)
    assert bus.batches == [ids]
    assert await _announced(db, ids) == [True, False, True]

    bus.refuse.clear()
    assert await Recovery(db, notifier, bus).sweep_unannounced(grace_seconds=0) == 1
    assert bus.batches[1:] == [[ids[1]]]
    assert await _announced(db, ids) == [True, True, True]
    assert subscriber.got == ids


async def test_a_batch_whose_link_broke_is_all_left_to_the_sweep(db: Database) -> None:
    """Whether any of it reached Redis is unknown: nothing is marked; the sweep gives back
    its claims while Redis stays down and publishes the lot once it is back."""
    tenant = await admin.get_or_create_tenant(db, f"bp-{uuid.uuid4().hex[:8]}")
    rows = await _decided_rows(db, tenant.id, 4)
    ids = [r.id for r in rows]
    bus = Flaky()
    bus.down = True
    notifier = Notifier(db)
    outbox = Outbox(db, notifier, bus, marker_linger_seconds=0.0)
    for row in rows:
        await outbox.announce(row)
    outbox.close()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run_publisher)
            tg.start_soon(outbox.run_marker)
    assert await _announced(db, ids) == [False] * 4

    recovery = Recovery(db, notifier, bus)
    assert await recovery.sweep_unannounced(grace_seconds=0) == 0
    assert await _announced(db, ids) == [False] * 4  # claims given back
    bus.down = False
    assert await recovery.sweep_unannounced(grace_seconds=0) == 4
    assert sorted(bus.batches[-1]) == sorted(ids)
    assert await _announced(db, ids) == [True] * 4


def test_the_origin_comes_first_and_is_ignored_by_the_parser() -> None:
    event = event_from_change(PendingChange(
        id="c1", tenant_id="t1", tool_name="create_issue", operation="create",
        entity_type="issue", status=Status.REJECTED.value, reason="no", decided_by="rita",
        decided_at=utcnow(), expires_at=utcnow()))
    raw = event.to_json("0123456789abcdef")
    assert raw.startswith('{"origin":"0123456789abcdef",')
    assert DecisionEvent.from_json(raw) == DecisionEvent.from_json(event.to_json()) == event


@pytest.mark.redis
async def test_another_instances_message_nobody_here_waits_for_is_dropped_unparsed() -> None:
    """The listener asks ``wants`` with the ids read from a message's bytes: one that no
    local subscriber waits for is dropped before any JSON is parsed, one that some
    subscriber waits for (its change, or its tenant's review queue) is handed over; a
    previous release's message (no origin) is parsed and handed over as before."""
    require_service("Redis", *redis_address())
    channel = f"colaflow:test:{uuid.uuid4().hex}"
    bus, other = (RedisBackplane(REDIS_URL, channel=channel) for _ in range(2))
    heard = Heard()
    asked: list[tuple[str, str]] = []

    def wants(change_id: str, tenant_id: str) -> bool:
        asked.append((change_id, tenant_id))
        return change_id == "wanted" or tenant_id == "t-queue"

    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.run, heard, _ignore_reconnect, wants)
        with anyio.fail_after(10):
            while not bus.healthy:
                await bus.link_changed.wait()
        await other.publish_many([decided("unwanted"), created("new-unwanted"),
                                  decided("wanted"), decided("queued", "t-queue"),
                                  created("new-queued", "t-queue")])
        client = aioredis.Redis.from_url(REDIS_URL)
        try:  # the previous release's message, after the others on the decisions' channel
            await client.publish(channel, '{"changeId":"old-1","tenantId":"t1","status":'
                                 '"Approved","payload":{"pendingChangeId":"old-1"},'
                                 '"committedAt":1700000000.5}')
        finally:
            await client.aclose()
        got = await heard.until(4)
        tg.cancel_scope.cancel()
    await bus.aclose()
    await other.aclose()
    assert sorted(e.change_id for e in got) == ["new-queued", "old-1", "queued", "wanted"]
    assert got[[e.change_id for e in got].index("queued")] == decided("queued", "t-queue")
    assert bus.unwanted_skipped == 2  # "new-unwanted" came before "new-queued"
    assert sorted(asked) == sorted([("unwanted", "t1"), ("new-unwanted", "t1"),
                                    ("wanted", "t1"), ("queued", "t-queue"),
                                    ("new-queued", "t-queue")])


def test_the_ids_are_read_from_the_message_bytes_only_when_plainly_there() -> None:
    origin = "0123456789abcdef"
    assert route_of(decided("c-1", "t-1").to_json(origin).encode()) == ("c-1", "t-1")
    assert route_of(created("c-2", "t-2").to_json(origin).encode()) == ("c-2", "t-2")
    assert route_of(decided("c-1").to_json().encode()) is None  # previous release
    # Escaped characters: parsed as JSON instead (and read right there).
    for odd in (decided('c"3', "t"), decided("c-4", 't\\"x'), decided("c-é", "t")):
        raw = odd.to_json(origin).encode()
        assert route_of(raw) is None
        assert DecisionEvent.from_json(raw) == odd


class _Sub:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.events: list[DecisionEvent] = []

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append(event)


async def test_the_notifier_wants_exactly_what_dispatch_would_deliver(db: Database) -> None:
    """``wants`` is false only where ``dispatch`` would deliver nothing: no subscriber of
    the change and no review queue of its tenant."""
    notifier = Notifier(db)
    watcher, reviewer = _Sub("t1"), _Sub("t2")
    probes = [decided("c1"), decided("c2"), decided("c3", "t2"), created("c4", "t2"),
              created("c5")]

    def agree() -> None:
        for event in probes:
            sent = notifier.dispatch(event)
            assert notifier.wants(event.change_id, event.tenant_id) or sent == 0
        assert [notifier.wants(e.change_id, e.tenant_id) for e in probes] == expected

    expected = [False] * 5
    agree()
    notifier.register(watcher, "c1")
    await notifier.subscribe_queue(reviewer)
    expected = [True, False, True, True, False]
    agree()
    assert [e.change_id for e in watcher.events] == ["c1"]
    assert [e.change_id for e in reviewer.events] == ["c3", "c4"]
    notifier.unregister(watcher, "c1")
    notifier.unregister_queue(reviewer)
    expected = [False] * 5
    agree()
