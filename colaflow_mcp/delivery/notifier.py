"""Local fan-out of decisions: who waits for which change, and delivery to each once.

Every subscriber (a hub connection, an MCP session or listen stream) registers the change
ids it waits for. A decision reaches it by whichever path comes first — the local fast
path after commit (``outbox``), the backplane, the announce sweep or a reconcile pass
(``recovery``), or the catch-up read at subscribe time — and is delivered once per
(subscriber, change).

A *queue subscriber* (a reviewer's hub connection on the review queue) waits for every
change of its tenant instead: each creation and each decision, once per (subscriber,
change, kind). What it remembers for that is bounded (:class:`QueueState`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Protocol

import anyio
from sqlmodel import col, select

from colaflow_mcp.delivery.events import DecisionEvent, event_from_change
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.store.batching import Coalescer
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, Status

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    """Something waiting for decisions: a hub connection, an MCP session, a listener."""

    @property
    def tenant_id(self) -> str: ...

    def deliver(self, event: DecisionEvent) -> None:
        """Hand over one event; must not block (enqueue, or close a stalled client)."""


class QueueState:
    """What one queue subscriber has been told: the pending changes (at most ``size``, the
    oldest forgotten first) and the latest decisions (at most ``recent``).

    A creation is delivered unless its change is known or recently decided (a creation
    that arrives after its decision, from another instance, stays untold); a decision
    unless recently decided. Past those bounds a very late duplicate could pass: the
    price of bounded memory per subscriber.
    """

    __slots__ = ("size", "recent", "pending", "decided", "priming")

    def __init__(self, size: int, recent: int) -> None:
        self.size = size
        self.recent = recent
        self.pending: dict[str, None] = {}  # insertion-ordered: the oldest first
        self.decided: dict[str, None] = {}
        # While the snapshot is read: the events for this subscriber, held back in order
        # (at most what arrives during one read), so none repeats the snapshot.
        self.priming: list[DecisionEvent] | None = []

    def take(self, event: DecisionEvent) -> bool:
        """Whether ``event`` is news to this subscriber (and remember it if so)."""
        cid = event.change_id
        if cid in self.decided:
            return False
        if event.created:
            if cid in self.pending:
                return False
            self.know(cid)
            return True
        self.pending.pop(cid, None)
        self.decided[cid] = None
        if len(self.decided) > self.recent:
            del self.decided[next(iter(self.decided))]
        return True

    def know(self, change_id: str) -> None:
        """Remember a pending change as told (in a snapshot or an event)."""
        self.pending[change_id] = None
        if len(self.pending) > self.size:
            del self.pending[next(iter(self.pending))]


class Notifier:
    """The registry of local subscribers, and delivery of decisions to them."""

    def __init__(self, db: Database, db_call_seconds: float = 10.0,
                 queue_size: int = 500, queue_recent: int = 1000) -> None:
        self.db = db
        self.db_call_seconds = db_call_seconds
        self.queue_size = queue_size
        self.queue_recent = queue_recent
        # change id -> {subscriber: delivered?}
        self._subs: dict[str, dict[Subscriber, bool]] = {}
        # tenant id -> {queue subscriber: what it has been told}
        self._queues: dict[str, dict[Subscriber, QueueState]] = {}
        self.delivered_count = 0
        # The catch-up reads of concurrent subscribes, one query for many (a reconnect
        # storm re-subscribes thousands at once).
        self._changes: Coalescer[str, PendingChange] = Coalescer(self._read_changes)

    async def _read_changes(self, change_ids: list[str]) -> dict[str, PendingChange]:
        async with self.db.read() as s:
            rows = (await s.exec(select(PendingChange).where(
                col(PendingChange.id).in_(change_ids)))).all()
        return {row.id: row for row in rows}

    # -- registry ---------------------------------------------------------------------

    def register(self, subscriber: Subscriber, change_id: str) -> None:
        """Wait for ``change_id``'s decision (nothing is read; see :meth:`subscribe`)."""
        self._subs.setdefault(change_id, {}).setdefault(subscriber, False)

    def unregister(self, subscriber: Subscriber, change_id: str) -> None:
        """Stop waiting for one change."""
        subs = self._subs.get(change_id)
        if subs is None:
            return
        subs.pop(subscriber, None)
        if not subs:
            del self._subs[change_id]

    def unregister_all(self, subscriber: Subscriber, change_ids: Iterable[str]) -> None:
        """Stop waiting for all of these (a subscriber going away)."""
        for change_id in list(change_ids):
            self.unregister(subscriber, change_id)

    def subscriber_count(self) -> int:
        """(subscriber, change) registrations held."""
        return sum(len(s) for s in self._subs.values())

    def owed(self) -> list[str]:
        """Change ids some local subscriber has not been told about yet."""
        return [cid for cid, subs in self._subs.items() if not all(subs.values())]

    async def subscribe(
        self, subscriber: Subscriber, change_id: str
    ) -> dict[str, Any] | None:
        """Register, then read the change in the subscriber's tenant.

        Returns the change's JSON snapshot, or None (and no registration) when it is missing
        or foreign. A change already decided is delivered at once. Registering before the
        read closes the gap where a decision commits between the two. Shielded and bounded:
        a caller that goes away (a socket closing, a session ending) never strands a
        registration between the two steps.
        """
        with anyio.CancelScope(shield=True), anyio.fail_after(self.db_call_seconds):
            self.register(subscriber, change_id)
            try:
                change = await self._changes.get(change_id)
            except BaseException:
                self.unregister(subscriber, change_id)
                raise
        if change is None or change.tenant_id != subscriber.tenant_id:
            self.unregister(subscriber, change_id)
            return None
        if change.status != Status.PENDING.value:
            # A catch-up, not a notification: no commit time (no latency to measure).
            self.dispatch(replace(event_from_change(change), committed_at=None))
        return change_to_json(change)

    # -- review queues ----------------------------------------------------------------

    async def subscribe_queue(self, subscriber: Subscriber) -> list[dict[str, Any]]:
        """Register for every creation and decision of the subscriber's tenant, then read
        its pending changes (newest first, at most ``queue_size``): their JSON.

        Registering first closes the gap where a change is created or decided during the
        read: what arrives meanwhile is held back and delivered after the snapshot, except
        the creation of a change the snapshot holds. Subscribing again starts afresh with a
        new snapshot. Shielded and bounded, as :meth:`subscribe`.
        """
        state = QueueState(self.queue_size, self.queue_recent)
        with anyio.CancelScope(shield=True), anyio.fail_after(self.db_call_seconds):
            self._queues.setdefault(subscriber.tenant_id, {})[subscriber] = state
            try:
                rows = await self.pending_changes(subscriber.tenant_id)
            except BaseException:
                self.unregister_queue(subscriber)
                raise
        held, state.priming = state.priming or [], None
        for change in reversed(rows):  # oldest first: the first forgotten
            if change.id not in state.decided:
                state.know(change.id)
        in_snapshot = {c.id for c in rows}
        sent = sum(self._deliver(subscriber, event) for event in held
                   if not (event.created and event.change_id in in_snapshot))
        self.delivered_count += sent
        return [change_to_json(c) for c in rows]

    async def pending_changes(self, tenant_id: str, ids_only: bool = False) -> list[Any]:
        """The tenant's pending changes, newest first, at most ``queue_size`` (rows, or
        ids only)."""
        what: Any = PendingChange.id if ids_only else PendingChange
        async with self.db.read() as s:
            return list((await s.exec(
                select(what)
                .where(col(PendingChange.tenant_id) == tenant_id)
                .where(col(PendingChange.status) == Status.PENDING.value)
                .order_by(col(PendingChange.created_at).desc(), col(PendingChange.id))
                .limit(self.queue_size))).all())

    def unregister_queue(self, subscriber: Subscriber) -> None:
        """Stop sending the tenant's changes to ``subscriber``."""
        queues = self._queues.get(subscriber.tenant_id)
        if queues is None:
            return
        queues.pop(subscriber, None)
        if not queues:
            del self._queues[subscriber.tenant_id]

    def queue_subscribers(self) -> dict[str, dict[Subscriber, QueueState]]:
        """Tenant id -> its queue subscribers and their state (for reconcile; read-only)."""
        return self._queues

    def wants(self, change_id: str, tenant_id: str) -> bool:
        """Whether :meth:`dispatch` of this change's event could deliver anything here
        (False: it would be a no-op, so a backplane message need not even be parsed)."""
        return tenant_id in self._queues or change_id in self._subs

    def has_queue(self, tenant_id: str) -> bool:
        """Whether some local queue subscriber of the tenant waits for its changes."""
        return tenant_id in self._queues

    def queue_subscriber_count(self) -> int:
        """Queue subscribers held."""
        return sum(len(q) for q in self._queues.values())

    # -- delivery ---------------------------------------------------------------------

    def dispatch(self, event: DecisionEvent) -> int:
        """Deliver to each local subscriber of the change that has not had it yet, and to
        the tenant's queue subscribers (a creation goes to those only)."""
        sent = self._dispatch_queues(event) if event.tenant_id in self._queues else 0
        subs = self._subs.get(event.change_id)
        if subs and not event.created:
            for subscriber, delivered in list(subs.items()):
                if delivered or subscriber.tenant_id != event.tenant_id:
                    continue
                subs[subscriber] = True
                sent += self._deliver(subscriber, event)
        self.delivered_count += sent
        return sent

    def _dispatch_queues(self, event: DecisionEvent) -> int:
        sent = 0
        for subscriber, state in list(self._queues[event.tenant_id].items()):
            if state.take(event):
                if state.priming is not None:
                    state.priming.append(event)
                else:
                    sent += self._deliver(subscriber, event)
        return sent

    @staticmethod
    def _deliver(subscriber: Subscriber, event: DecisionEvent) -> int:
        try:
            subscriber.deliver(event)
            return 1
        except Exception:
            logger.exception("delivery to a subscriber failed")
            return 0
