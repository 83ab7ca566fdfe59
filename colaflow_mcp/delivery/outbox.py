"""After a decision commits: deliver locally at once, publish, then record it published.

``announce`` (the domain's ``Announcer`` port) never waits on the network: it dispatches to
local subscribers and queues the event. The publisher task hands queued events to the
backplane and the marker task records ``announced_at`` for what was published, in batches.
Whatever cannot be queued or published is left to the announce sweep (``recovery``).
With the in-process backplane (one instance, no Redis) publishing is handing the event to
this instance's own notifier, which ``announce`` has just done: a decision goes straight
to the marker and nothing to the publisher (one task wake-up per event fewer).

A new proposal is announced the same way (``PendingChangeCreated``, for review queues),
but never marked: ``announced_at`` is about the decision. A creation that is not
published is made up for by the reconcile pass of every instance with a review queue.
"""

from __future__ import annotations

import logging
import time

import anyio

from colaflow_mcp import metrics
from colaflow_mcp.delivery.backplane import Backplane, MemoryBackplane
from colaflow_mcp.delivery.events import DecisionEvent, created_event, event_from_change
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.store import statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, Status, utcnow

logger = logging.getLogger(__name__)


class Outbox:
    """The announce → publisher → marker pipeline of one instance."""

    def __init__(self, db: Database, notifier: Notifier, bus: Backplane, size: int = 10_000,
                 marker_linger_seconds: float = 0.05) -> None:
        self.db = db
        self.notifier = notifier
        self.bus = bus
        self.marker_linger_seconds = marker_linger_seconds
        self._outbox_send, self._outbox_receive = anyio.create_memory_object_stream[
            DecisionEvent](max_buffer_size=size)
        self._marks_send, self._marks_receive = anyio.create_memory_object_stream[str](
            max_buffer_size=size)
        self._closing = False
        # The in-process backplane only re-dispatches locally what announce dispatched.
        self._local_only = isinstance(bus, MemoryBackplane)

    async def announce(self, change: PendingChange) -> None:
        """Deliver locally at once, queue for the backplane (the ``Announcer`` port).

        Publishing happens on the publisher task, so a slow or absent Redis never delays the
        reviewer's request; what cannot be queued or published is left to the sweep.
        """
        created = change.status == Status.PENDING.value
        if created:
            metrics.proposed(change.tool_name)
            if self._local_only and not self.notifier.has_queue(change.tenant_id):
                # A creation goes to review queues only, and this instance is the only one
                # (nothing is published) with no queue of the tenant: nobody to tell, so the
                # change's JSON is not built. A queue subscribing later reads it in its
                # snapshot.
                return
            event = created_event(change)
        else:
            event = event_from_change(change, time.time())  # just committed
            metrics.decided(change.status)
        self.notifier.dispatch(event)
        net = "reconcile" if created else "the announce sweep"
        try:
            if not self._local_only:
                self._outbox_send.send_nowait(event)
            elif self._closing:
                raise anyio.ClosedResourceError
            elif not created:  # published (to this instance alone): to be marked
                self._marks_send.send_nowait(change.id)
        except anyio.WouldBlock:
            logger.warning("publish queue full; %s left to %s", change.id, net)
        except anyio.ClosedResourceError:
            logger.info("shutting down; %s left to %s", change.id, net)

    def close(self) -> None:
        """Stop taking decisions to publish; the publisher and marker drain and return."""
        self._closing = True
        self._outbox_send.close()

    async def run_publisher(self, batch: int = 256) -> None:
        """Publish queued decisions; hand what was published to the marker.

        Returns once :meth:`close` was called and the queue is drained.
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
            for change_id in await self._publish(events):
                try:
                    self._marks_send.send_nowait(change_id)
                except anyio.WouldBlock:
                    pass  # unmarked: the sweep re-announces it, subscribers dedupe

    async def _publish(self, events: list[DecisionEvent]) -> list[str]:
        """Publish the batch at once; the ids of the decisions surely published."""
        try:
            published = await self.bus.publish_many(events)
        except Exception as exc:
            # The backplane is down, or the link broke mid-batch: what reached Redis is
            # unknown, so nothing is marked (the sweep repeats it; subscribers dedupe).
            # (The backplane says an outage once; this would be once per batch.)
            logger.debug("publish failed (%s); %d event(s) left to the announce "
                         "sweep and reconcile", type(exc).__name__, len(events))
            return []
        if len(published) < len(events):
            logger.warning("publish failed for %d of %d event(s); left to the announce "
                           "sweep and reconcile", len(events) - len(published), len(events))
        # Only decisions are marked (and swept).
        return [event.change_id for event in published if not event.created]

    async def run_marker(self, batch: int = 512) -> None:
        """Record ``announced_at`` for published decisions, in batches.

        A task of its own, so a slow commit never holds up the next publication. After the
        first mark it lingers up to ``marker_linger_seconds`` for more, so that under load
        one write records many decisions instead of one write per decision (far below the
        sweep's grace period, so the sweep never repeats them). Returns once the publisher
        has returned and every mark is written.
        """
        while True:
            try:
                ids = [await self._marks_receive.receive()]
            except anyio.EndOfStream:
                return
            if not self._closing:  # no lingering while draining for shutdown
                await anyio.sleep(self.marker_linger_seconds)
            while len(ids) < batch:
                try:
                    ids.append(self._marks_receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await self._mark_announced(ids)

    async def _mark_announced(self, change_ids: list[str]) -> None:
        try:
            params = {"p_ids": change_ids, "p_now": utcnow()}
            await self.db.transact(
                lambda s: s.connection().execute(statements.MARK_ANNOUNCED, params))
        except Exception:
            logger.exception("could not mark %d decision(s) announced; the sweep may repeat "
                             "them (subscribers still get each once)", len(change_ids))
