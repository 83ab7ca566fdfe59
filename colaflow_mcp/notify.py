"""Fan-out of decisions to local subscribers (hub connections, MCP sessions), exactly once.

Every subscriber registers the change ids it waits for. A decision reaches it by whichever
path comes first — the local fast path after commit, the backplane, the announce sweep, a
reconcile pass, or the catch-up read at subscribe time — and is delivered once per
(subscriber, change).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import anyio
from sqlalchemy import bindparam, update
from sqlmodel import col, select

from colaflow_mcp.bus import Backplane
from colaflow_mcp.db import Database
from colaflow_mcp.events import DecisionEvent, change_to_json, event_from_change
from colaflow_mcp.models import TERMINAL, PendingChange, Status, utcnow

logger = logging.getLogger(__name__)
_PC = PendingChange.__table__  # type: ignore[attr-defined]
_MARK_ANNOUNCED = _PC.update().where(
    _PC.c.id.in_(bindparam("p_ids", expanding=True)), _PC.c.announced_at.is_(None),
).values(announced_at=bindparam("p_now", type_=_PC.c.announced_at.type))


class Subscriber(Protocol):
    """Something waiting for decisions: a hub connection, an MCP session, a listener."""

    @property
    def tenant_id(self) -> str: ...

    def deliver(self, event: DecisionEvent) -> None:
        """Hand over one event; must not block (enqueue, or close a stalled client)."""


class Notifier:
    """Local subscription registry plus announce/dispatch/reconcile of decisions."""

    def __init__(self, db: Database, bus: Backplane, outbox_size: int = 10_000) -> None:
        self.db = db
        self.bus = bus
        # change id -> {subscriber: delivered?}
        self._subs: dict[str, dict[Subscriber, bool]] = {}
        self.delivered_count = 0
        self._outbox_send, self._outbox_receive = anyio.create_memory_object_stream[
            DecisionEvent](max_buffer_size=outbox_size)
        self._marks_send, self._marks_receive = anyio.create_memory_object_stream[str](
            max_buffer_size=outbox_size)
        self._closing = False

    # -- registry ---------------------------------------------------------------------

    def register(self, subscriber: Subscriber, change_id: str) -> None:
        self._subs.setdefault(change_id, {}).setdefault(subscriber, False)

    def unregister(self, subscriber: Subscriber, change_id: str) -> None:
        subs = self._subs.get(change_id)
        if subs is None:
            return
        subs.pop(subscriber, None)
        if not subs:
            del self._subs[change_id]

    def unregister_all(self, subscriber: Subscriber, change_ids: Iterable[str]) -> None:
        for change_id in list(change_ids):
            self.unregister(subscriber, change_id)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def subscribe(
        self, subscriber: Subscriber, change_id: str
    ) -> dict[str, Any] | None:
        """Register, then read the change in the subscriber's tenant.

        Returns the change's JSON snapshot, or None (and no registration) when it is missing
        or foreign. A change already decided is delivered at once. Registering before the
        read closes the gap where a decision commits between the two.
        """
        self.register(subscriber, change_id)
        try:
            async with self.db.read() as s:
                change = await s.get(PendingChange, change_id)
        except Exception:
            self.unregister(subscriber, change_id)
            raise
        if change is None or change.tenant_id != subscriber.tenant_id:
            self.unregister(subscriber, change_id)
            return None
        if change.status != Status.PENDING.value:
            self.dispatch(event_from_change(change))
        return change_to_json(change)

    # -- delivery ---------------------------------------------------------------------

    def dispatch(self, event: DecisionEvent) -> int:
        """Deliver to each local subscriber of the change that has not had it yet."""
        subs = self._subs.get(event.change_id)
        if not subs:
            return 0
        sent = 0
        for subscriber, delivered in list(subs.items()):
            if delivered or subscriber.tenant_id != event.tenant_id:
                continue
            subs[subscriber] = True
            try:
                subscriber.deliver(event)
                sent += 1
            except Exception:
                logger.exception("delivery to a subscriber failed")
        self.delivered_count += sent
        return sent

    async def announce(self, change: PendingChange) -> None:
        """After a decision commits: deliver locally at once, queue it for the backplane.

        Publishing happens on the publisher task, so a slow or absent Redis never delays the
        reviewer's request; what cannot be queued or published is left to the sweep.
        """
        event = event_from_change(change)
        self.dispatch(event)
        try:
            self._outbox_send.send_nowait(event)
        except anyio.WouldBlock:
            logger.warning("publish queue full; %s left to the announce sweep", change.id)
        except anyio.ClosedResourceError:
            logger.info("shutting down; %s left to the announce sweep", change.id)

    def close_outbox(self) -> None:
        """Stop taking decisions to publish; the publisher and marker drain and return."""
        self._closing = True
        self._outbox_send.close()

    async def run_publisher(self, batch: int = 256) -> None:
        """Publish queued decisions; hand what was published to the marker.

        Returns once :meth:`close_outbox` was called and the queue is drained.
        """
        while True:
            try:
                events = [await self._outbox_receive.receive()]
            except anyio.EndOfStream:
                self._marks_send.close()
                return
            while len(events) < batch:
                try:
                    events.append(self._outbox_receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            published: list[str] = []
            for event in events:
                try:
                    await self.bus.publish(event)
                    published.append(event.change_id)
                except Exception as exc:
                    # The backplane is down: the rest of the batch would fail the same way.
                    logger.warning("publish failed (%s); %d decision(s) left to the announce "
                                   "sweep", type(exc).__name__, len(events) - len(published))
                    break
            for change_id in published:
                try:
                    self._marks_send.send_nowait(change_id)
                except anyio.WouldBlock:
                    pass  # unmarked: the sweep re-announces it, subscribers dedupe

    async def run_marker(self, batch: int = 512, linger_seconds: float = 0.05) -> None:
        """Record ``announced_at`` for published decisions, in batches.

        A task of its own, so a slow commit never holds up the next publication. After the
        first mark it lingers up to ``linger_seconds`` for more, so that under load one
        write records many decisions instead of one write per decision (far below the
        sweep's grace period, so the sweep never repeats them). Returns once the publisher
        has returned and every mark is written.
        """
        while True:
            try:
                ids = [await self._marks_receive.receive()]
            except anyio.EndOfStream:
                return
            if not self._closing:  # no lingering while draining for shutdown
                await anyio.sleep(linger_seconds)
            while len(ids) < batch:
                try:
                    ids.append(self._marks_receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await self._mark_announced(ids)

    async def _mark_announced(self, change_ids: list[str]) -> None:
        try:
            params = {"p_ids": change_ids, "p_now": utcnow()}
            await self.db.transact(lambda s: s.connection().execute(_MARK_ANNOUNCED, params))
        except Exception:
            logger.exception("could not mark %d decision(s) announced; the sweep may repeat "
                             "them (subscribers still get each once)", len(change_ids))

    async def sweep_unannounced(self, grace_seconds: float, limit: int = 500) -> int:
        """Re-announce decisions committed but never published (crash, bus outage)."""
        from datetime import timedelta

        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        async with self.db.read() as s:
            rows = (
                await s.exec(
                    select(PendingChange)
                    .where(col(PendingChange.announced_at).is_(None))
                    .where(col(PendingChange.decided_at).is_not(None))
                    .where(col(PendingChange.decided_at) < cutoff)
                    .limit(limit)
                )
            ).all()
        count = 0
        for change in rows:
            async with self.db.write() as s:
                claimed = await s.exec(
                    update(PendingChange)
                    .where(col(PendingChange.id) == change.id)
                    .where(col(PendingChange.announced_at).is_(None))
                    .values(announced_at=utcnow())
                )
            if claimed.rowcount != 1:
                continue  # another instance took it
            event = event_from_change(change)
            self.dispatch(event)
            try:
                await self.bus.publish(event)
                count += 1
            except Exception as exc:
                logger.warning("re-announce of %s failed (%s)", change.id, type(exc).__name__)
                async with self.db.write() as s:
                    await s.exec(
                        update(PendingChange)
                        .where(col(PendingChange.id) == change.id)
                        .values(announced_at=None)
                    )
        return count

    async def reconcile(self, chunk: int = 500) -> int:
        """Deliver, from the database, every decision a local subscriber is still owed."""
        waiting = [cid for cid, subs in self._subs.items() if not all(subs.values())]
        delivered = 0
        terminal = [s.value for s in TERMINAL]
        for i in range(0, len(waiting), chunk):
            ids = waiting[i : i + chunk]
            async with self.db.read() as s:
                rows = (
                    await s.exec(
                        select(PendingChange)
                        .where(col(PendingChange.id).in_(ids))
                        .where(col(PendingChange.status).in_(terminal))
                    )
                ).all()
            for change in rows:
                delivered += self.dispatch(event_from_change(change))
        if delivered:
            logger.info("reconcile delivered %d missed decision(s)", delivered)
        return delivered
