"""Group commit of proposals (``ChangeService.proposals``): concurrent proposals of a tenant
share a transaction — their rows, audit entries and webhook deliveries commit together and
the chain verifies — and a member that fails (a refused plan, or a failure in the shared
transaction) fails only itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from sqlalchemy import delete
from sqlmodel import Session, col, select

from colaflow_mcp.domain import admin, audit, webhooks
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.recording import Recorder, Transition
from colaflow_mcp.domain.webhooks import WebhookRecorder
from colaflow_mcp.store.tables import AuditEntry, PendingChange, Project, WebhookDelivery
from tests.harness import Harness

pytestmark = pytest.mark.anyio


class _CommittedCheck:
    """An announcer that reads each announced change back from the database: an
    announcement before its commit would find no row."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.announced: list[str] = []
        self.unseen: list[str] = []

    async def announce(self, change: PendingChange) -> None:
        async with self.h.runtime.db.read() as s:
            if await s.get(PendingChange, change.id) is None:
                self.unseen.append(change.id)
        self.announced.append(change.id)


async def _setup(h: Harness, recorders: Sequence[Recorder] = ()
                 ) -> tuple[ChangeService, _CommittedCheck, Principal]:
    key = await h.agent_key("acme", "worker")
    await h.project("acme", "WEB")
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None
    announcer = _CommittedCheck(h)
    changes = ChangeService(h.runtime.db, announcer, h.settings,
                            recorders=(*recorders, WebhookRecorder(), audit.record))
    return changes, announcer, principal


async def _propose_all(changes: ChangeService, principal: Principal,
                       calls: list[dict[str, Any]]) -> list[Any]:
    """Every call at once; each one's change or exception, in order."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await changes.propose(principal, "create_issue", calls[i])
        except Exception as exc:
            results[i] = exc

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
    return results


async def _proposed_entries(h: Harness, tenant_id: str) -> list[str | None]:
    async with h.runtime.db.read() as s:
        return list((await s.exec(
            select(AuditEntry.change_id).where(col(AuditEntry.tenant_id) == tenant_id)
            .where(col(AuditEntry.action) == "change.proposed")
            .order_by(col(AuditEntry.seq)))).all())


async def test_concurrent_proposals_share_a_transaction_and_the_chain_verifies(
        harness: Harness) -> None:
    h = harness
    changes, announcer, principal = await _setup(h)
    tenant = await admin.get_or_create_tenant(h.runtime.db, "acme")
    await webhooks.add_endpoint(h.runtime.db, tenant, "http://127.0.0.1:9/hook",
                                allow_private=True)

    results = await _propose_all(
        changes, principal, [{"project_key": "WEB", "title": f"t{i}"} for i in range(16)])

    assert all(isinstance(r, PendingChange) for r in results), results
    ids = [r.id for r in results]
    # All 16 were queued while the first one's transaction ran: fewer transactions.
    assert changes.proposals.members == 16
    assert changes.proposals.transactions < 16
    assert changes.proposals.retried == 0
    # Each change was announced once, after its commit.
    assert sorted(announcer.announced) == sorted(ids) and announcer.unseen == []
    # One audit entry and one webhook delivery per change, all committed with it.
    assert sorted(await _proposed_entries(h, principal.tenant_id)) == sorted(ids)
    async with h.runtime.db.read() as s:
        queued = (await s.exec(select(WebhookDelivery.change_id).where(
            col(WebhookDelivery.event_type) == webhooks.CREATED))).all()
        stored = (await s.exec(select(PendingChange.id))).all()
    assert sorted(queued) == sorted(ids) and sorted(stored) == sorted(ids)
    verdict = await audit.AuditLog(h.runtime.db).verify(principal.tenant_id)
    assert verdict.ok, verdict.describe()


async def test_a_refused_plan_fails_only_its_own_proposal(harness: Harness) -> None:
    h = harness
    changes, announcer, principal = await _setup(h)
    await h.project("acme", "OLD")
    lone_error = None
    async with h.runtime.db.write() as s:  # the project goes before its proposals plan
        await s.exec(delete(Project).where(col(Project.key) == "OLD"))  # type: ignore[call-overload]
    try:
        await changes.propose(principal, "create_issue", {"project_key": "OLD", "title": "x"})
    except InvalidArguments as exc:
        lone_error = str(exc)
    assert lone_error == "project OLD does not exist"
    before = changes.proposals.transactions

    calls = [{"project_key": "WEB", "title": f"t{i}"} for i in range(12)]
    calls.insert(6, {"project_key": "OLD", "title": "gone"})
    results = await _propose_all(changes, principal, calls)

    refused = results.pop(6)
    assert isinstance(refused, InvalidArguments) and str(refused) == lone_error
    assert all(isinstance(r, PendingChange) for r in results), results
    # Shared transactions, and nobody ran again: the refused plan wrote nothing.
    assert changes.proposals.transactions - before < 13
    assert changes.proposals.retried == 0
    ids = [r.id for r in results]
    assert sorted(announcer.announced) == sorted(ids) and announcer.unseen == []
    assert sorted(await _proposed_entries(h, principal.tenant_id)) == sorted(ids)
    verdict = await audit.AuditLog(h.runtime.db).verify(principal.tenant_id)
    assert verdict.ok, verdict.describe()


async def test_a_failure_in_the_shared_transaction_fails_only_its_member(
        harness: Harness) -> None:
    h = harness

    def refuse_one(s: Session, transitions: Sequence[Transition]) -> None:
        # A recorder that fails for one change (as a database error would): the group is
        # rolled back and each proposal runs again alone.
        for t in transitions:
            if t.change is not None and t.change.summary.endswith("'refuse me'"):
                raise RuntimeError("recorder refused")

    changes, announcer, principal = await _setup(h, [refuse_one])
    calls = [{"project_key": "WEB", "title": f"t{i}"} for i in range(10)]
    calls.insert(4, {"project_key": "WEB", "title": "refuse me"})
    results = await _propose_all(changes, principal, calls)

    failed = results.pop(4)
    assert isinstance(failed, RuntimeError) and str(failed) == "recorder refused"
    assert all(isinstance(r, PendingChange) for r in results), results
    assert changes.proposals.retried >= 1
    ids = [r.id for r in results]
    async with h.runtime.db.read() as s:
        stored = (await s.exec(select(PendingChange.id))).all()
    assert sorted(stored) == sorted(ids)  # nothing of the failed one, all of the others
    assert sorted(announcer.announced) == sorted(ids) and announcer.unseen == []
    assert sorted(await _proposed_entries(h, principal.tenant_id)) == sorted(ids)
    verdict = await audit.AuditLog(h.runtime.db).verify(principal.tenant_id)
    assert verdict.ok, verdict.describe()
