"""Local fan-out of decisions: who waits for which change, and delivery to each once.

Every subscriber (a hub connection, an MCP session or listen stream) registers the change
ids it waits for. A decision reaches it by whichever path comes first — the local fast
path after commit (``outbox``), the backplane, the announce sweep or a reconcile pass
(``recovery``), or the catch-up read at subscribe time — and is delivered once per
(subscriber, change).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import anyio

from colaflow_mcp.delivery.events import DecisionEvent, event_from_change
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, Status

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    """Something waiting for decisions: a hub connection, an MCP session, a listener."""

    @property
    def tenant_id(self) -> str: ...

    def deliver(self, event: DecisionEvent) -> None:
        """Hand over one event; must not block (enqueue, or close a stalled client)."""


class Notifier:
    """The registry of local subscribers, and delivery of decisions to them."""

    def __init__(self, db: Database, db_call_seconds: float = 10.0) -> None:
        self.db = db
        self.db_call_seconds = db_call_seconds
        # change id -> {subscriber: delivered?}
        self._subs: dict[str, dict[Subscriber, bool]] = {}
        self.delivered_count = 0

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
                async with self.db.read() as s:
                    change = await s.get(PendingChange, change_id)
            except BaseException:
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
