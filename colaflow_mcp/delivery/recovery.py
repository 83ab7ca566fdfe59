"""The safety nets: re-announce what was committed but never published, and deliver to
local subscribers, from the database, whatever they are still owed (review queues
included: creations and decisions they missed).

The database is the truth, the bus a doorbell: these passes recover from a crash between
commit and publish, a backplane outage and a missed message. The runtime's supervisor
runs them periodically (and ``reconcile`` after every backplane reconnect).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from colaflow_mcp.delivery.backplane import Backplane
from colaflow_mcp.delivery.events import created_event, event_from_change
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import TERMINAL, PendingChange, Status, utcnow

logger = logging.getLogger(__name__)


class Recovery:
    """Announce sweep and reconcile passes of one instance."""

    def __init__(self, db: Database, notifier: Notifier, bus: Backplane) -> None:
        self.db = db
        self.notifier = notifier
        self.bus = bus

    async def sweep_unannounced(self, grace_seconds: float, limit: int = 500) -> int:
        """Re-announce decisions committed but never published (crash, bus outage).

        Each is claimed first (``announced_at`` set where still unset), so one instance
        re-announces it; a failed publish un-claims it for the next pass. While the
        backplane is down nothing is claimed: each row goes to this instance's subscribers.
        """
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        async with self.db.read() as s:
            rows = (await s.exec(
                select(PendingChange)
                .where(col(PendingChange.announced_at).is_(None))
                .where(col(PendingChange.decided_at).is_not(None))
                .where(col(PendingChange.decided_at) < cutoff)
                .limit(limit))).all()
        claimed = []
        for change in rows:
            event = event_from_change(change)
            if not self.bus.healthy:
                # The backplane is down (it says so once): this instance's subscribers get
                # it now; claiming and giving back every row each pass would only churn.
                self.notifier.dispatch(event)
                continue
            if not await self._set_announced(change.id, claim=True):
                continue  # another instance took it
            self.notifier.dispatch(event)  # here first: the backplane skips our own
            claimed.append(event)
        if not claimed:
            return 0
        try:
            published = {e.change_id for e in await self.bus.publish_many(claimed)}
        except Exception as exc:
            # (The backplane says an outage once; this would be once per pass.)
            logger.debug("announce sweep: publishing %d decision(s) failed (%s); left for a "
                         "later pass", len(claimed), type(exc).__name__)
            published = set()
        for event in claimed:
            if event.change_id not in published:
                await self._set_announced(event.change_id, claim=False)
        if published:
            logger.info("announce sweep re-announced %d decision(s) committed but not "
                        "published", len(published))
        return len(published)

    async def _set_announced(self, change_id: str, *, claim: bool) -> bool:
        """Claim an unannounced change (True if this call did), or give the claim back."""
        stmt = update(PendingChange).where(col(PendingChange.id) == change_id)
        if claim:
            stmt = stmt.where(col(PendingChange.announced_at).is_(None))
        async with self.db.write() as s:
            result = await s.exec(stmt.values(announced_at=utcnow() if claim else None))
        return bool(result.rowcount == 1)

    async def reconcile(self, chunk: int = 500) -> int:
        """Deliver, from the database, every decision a local subscriber is still owed."""
        waiting = self.notifier.owed()
        delivered = 0
        terminal = [s.value for s in TERMINAL]
        for i in range(0, len(waiting), chunk):
            async with self.db.read() as s:
                rows = (await s.exec(
                    select(PendingChange)
                    .where(col(PendingChange.id).in_(waiting[i:i + chunk]))
                    .where(col(PendingChange.status).in_(terminal)))).all()
            for change in rows:
                delivered += self.notifier.dispatch(event_from_change(change))
        if delivered:
            logger.info("reconcile delivered %d missed decision(s)", delivered)
        return delivered

    async def reconcile_queues(self, chunk: int = 500, missed_since: datetime | None = None
                               ) -> int:
        """Bring every local review queue in line with the database: a pending change it
        was not told of is delivered as created, one it knows as pending that is no longer
        pending as its decision. After the backplane link was lost (``missed_since``), the
        decisions made since then are delivered too, also of changes a queue was never
        told of (proposed and decided while the link was down)."""
        delivered = 0
        for tenant_id, queues in list(self.notifier.queue_subscribers().items()):
            if missed_since is not None:
                delivered += await self._decided_since(tenant_id, missed_since)
            pending = set(await self.notifier.pending_changes(tenant_id, ids_only=True))
            unknown: set[str] = set()
            gone: set[str] = set()
            for state in list(queues.values()):
                unknown.update(cid for cid in pending
                               if cid not in state.pending and cid not in state.decided)
                gone.update(cid for cid in state.pending if cid not in pending)
            wanted = sorted(unknown | gone)
            for i in range(0, len(wanted), chunk):
                async with self.db.read() as s:
                    rows = (await s.exec(
                        select(PendingChange)
                        .where(col(PendingChange.id).in_(wanted[i:i + chunk]))
                        .where(col(PendingChange.tenant_id) == tenant_id))).all()
                # Oldest first, so a queue that must forget some forgets the oldest.
                for change in sorted(rows, key=lambda c: (c.created_at, c.id)):
                    if change.status == Status.PENDING.value:
                        if change.id in unknown:  # still pending, beyond the window: keep
                            delivered += self.notifier.dispatch(created_event(change))
                    else:
                        delivered += self.notifier.dispatch(event_from_change(change))
        if delivered:
            logger.info("reconcile delivered %d missed review-queue event(s)", delivered)
        return delivered

    async def _decided_since(self, tenant_id: str, since: datetime) -> int:
        """Dispatch the tenant's decisions made since ``since`` (the newest ones, as many
        as a queue subscriber remembers; oldest first)."""
        async with self.db.read() as s:
            rows = (await s.exec(
                select(PendingChange)
                .where(col(PendingChange.tenant_id) == tenant_id)
                .where(col(PendingChange.decided_at) >= since)
                .order_by(col(PendingChange.decided_at).desc(), col(PendingChange.id))
                .limit(self.notifier.queue_recent))).all()
        return sum(self.notifier.dispatch(event_from_change(c)) for c in reversed(rows))
