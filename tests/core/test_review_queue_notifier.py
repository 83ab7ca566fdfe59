"""The notifier's review queues on their own: once per (subscriber, change, kind), bounded
memory, and a snapshot that never repeats what an event already told."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from colaflow_mcp.delivery.events import DecisionEvent, created_event
from colaflow_mcp.delivery.notifier import Notifier, QueueState
from colaflow_mcp.domain import admin
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, utcnow
from tests.harness import Harness

pytestmark = pytest.mark.anyio


class Reviewer:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.events: list[tuple[str, str]] = []

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append((event.target, event.change_id))


def created(cid: str, tenant: str = "t1") -> DecisionEvent:
    return DecisionEvent(cid, tenant, "Pending", {"id": cid})


def decided(cid: str, status: str = "Approved", tenant: str = "t1") -> DecisionEvent:
    return DecisionEvent(cid, tenant, status, {"pendingChangeId": cid})


async def _pending(db: Database, tenant_id: str, title: str) -> PendingChange:
    now = utcnow()
    change = PendingChange(
        tenant_id=tenant_id, tool_name="create_issue", operation="create", entity_type="issue",
        arguments={"project_key": "WEB", "title": title}, summary=title, created_at=now,
        expires_at=now + timedelta(hours=1))
    async with db.write() as s:
        s.add(change)
    return change


def test_each_creation_and_decision_once_and_a_late_creation_not_at_all() -> None:
    state = QueueState(size=10, recent=10)
    assert state.take(created("a")) and not state.take(created("a"))
    assert state.take(decided("a")) and not state.take(decided("a"))
    assert not state.take(created("a"))  # the creation came back (the sweep, the bus)
    # Decided on another instance before its creation got here: the decision only.
    assert state.take(decided("b", "Rejected")) and not state.take(created("b"))


def test_what_a_queue_subscriber_remembers_is_bounded() -> None:
    state = QueueState(size=3, recent=2)
    for i in range(100):
        assert state.take(created(f"p{i}"))
    assert list(state.pending) == ["p97", "p98", "p99"]  # the oldest are forgotten
    for i in range(100):
        state.take(decided(f"d{i}"))
    assert list(state.decided) == ["d98", "d99"] and len(state.pending) == 3


async def test_events_that_arrive_while_the_snapshot_is_read_follow_it_without_repeating_it(
    db: Database,
) -> None:
    tenant = await admin.get_or_create_tenant(db, "acme")
    before = await _pending(db, tenant.id, "before")
    during = await _pending(db, tenant.id, "during")
    # Committed just after the read (on another instance): not in the snapshot.
    later = PendingChange(tenant_id=tenant.id, tool_name="create_issue", operation="create",
                          entity_type="issue", expires_at=utcnow())
    reviewer = Reviewer(tenant.id)

    class RacingNotifier(Notifier):
        async def pending_changes(self, tenant_id: str, ids_only: bool = False) -> list[Any]:
            rows = await super().pending_changes(tenant_id, ids_only)
            # Events arrive (the bus) while the snapshot is being read.
            self.dispatch(created_event(during))
            self.dispatch(decided(before.id, "Rejected", tenant=tenant.id))
            self.dispatch(created_event(later))
            assert reviewer.events == []  # held back until the snapshot is out
            return rows

    notifier = RacingNotifier(db)
    snapshot = await notifier.subscribe_queue(reviewer)
    assert [c["id"] for c in snapshot] == [during.id, before.id]
    assert reviewer.events == [("PendingChangeRejected", before.id),
                               ("PendingChangeCreated", later.id)]
    # Known now: neither is told again.
    notifier.dispatch(created_event(during))
    notifier.dispatch(created_event(later))
    assert len(reviewer.events) == 2


async def test_creations_go_to_queue_subscribers_only_and_stay_in_their_tenant(
    db: Database,
) -> None:
    acme = await admin.get_or_create_tenant(db, "acme")
    change = await _pending(db, acme.id, "new")
    notifier = Notifier(db)
    agent, reviewer, foreign = Reviewer(acme.id), Reviewer(acme.id), Reviewer("other")
    assert await notifier.subscribe(agent, change.id) is not None
    await notifier.subscribe_queue(reviewer)
    await notifier.subscribe_queue(foreign)
    notifier.dispatch(created_event(change))  # e.g. from the bus, after the snapshot
    notifier.dispatch(decided(change.id, tenant=acme.id))
    assert agent.events == [("PendingChangeApproved", change.id)]
    assert reviewer.events == [("PendingChangeApproved", change.id)]  # known from snapshot
    assert foreign.events == []
    notifier.unregister_queue(reviewer)
    notifier.unregister_queue(foreign)
    assert notifier.queue_subscriber_count() == 0


async def test_a_queue_of_one_instance_gets_what_was_proposed_before_it_and_each_creation_after(
    harness: Harness,
) -> None:
    """One instance (no backplane): a creation with no queue of its tenant to tell is not
    turned into an event, so a queue subscribing later must find it in its snapshot, and
    the creations after it arrive as events, once each, and only for its tenant."""
    h = harness
    await h.project("acme", "WEB")
    await h.project("globex", "WEB")
    acme_key, globex_key = await h.agent_key("acme"), await h.agent_key("globex")
    before = await h.propose(acme_key, arguments={"project_key": "WEB", "title": "before"})
    runtime = h.runtime
    acme = await admin.get_or_create_tenant(runtime.db, "acme")
    reviewer = Reviewer(acme.id)
    snapshot = await runtime.notifier.subscribe_queue(reviewer)
    try:
        assert [c["id"] for c in snapshot] == [before["id"]]
        after = await h.propose(acme_key, arguments={"project_key": "WEB", "title": "after"})
        await h.propose(globex_key, arguments={"project_key": "WEB", "title": "elsewhere"})
        assert reviewer.events == [("PendingChangeCreated", after["id"])]
    finally:
        runtime.notifier.unregister_queue(reviewer)
