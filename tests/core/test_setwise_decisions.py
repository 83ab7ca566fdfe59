"""A tenant's concurrent decisions decided set-wise in one transaction (domain/changes.py:
one claim statement for the group, create_issue executed per project with one statement):
the same outcome as one after the other — the second decision of a change loses, issues
are numbered in order, a failing member fails alone, the audit chain verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import delete, update
from sqlmodel import col, select

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import Conflict
from colaflow_mcp.store.tables import Issue, PendingChange, Project, Status, utcnow
from tests.harness import Harness, fast_settings, in_process, two_projects

pytestmark = pytest.mark.anyio


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    """The app with its expiry loop asleep: the tests expire overdue changes themselves."""
    settings = fast_settings(any_database_url, expiry_max_wait_seconds=3600.0)
    async with in_process(settings) as h:
        yield h


async def _propose(h: Harness, agent: Principal, tool: str = "create_issue",
                   **arguments: Any) -> str:
    if tool == "create_issue":
        arguments = {"project_key": "WEB", "title": "t", **arguments}
    return (await h.runtime.changes.propose(agent, tool, arguments)).id


async def _overdue(h: Harness, change_id: str) -> None:
    async with h.runtime.db.write() as s:
        await s.exec(update(PendingChange).where(col(PendingChange.id) == change_id)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))


async def _in_one_group(h: Harness, lead: Callable[[], Awaitable[Any]],
                        calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run ``lead`` (alone: its tenant is idle), and ``calls`` while its transaction runs,
    so they queue for the next transaction together; each one's value or exception. Fails
    unless exactly those two transactions ran."""
    groups = h.runtime.changes.decisions
    before = groups.transactions, groups.members, groups.retried
    out: list[Any] = [None] * len(calls)

    async def one(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            out[i] = await call()
        except Exception as exc:
            out[i] = exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead)
            for i, call in enumerate(calls):
                tg.start_soon(one, i, call)
    assert (groups.transactions - before[0], groups.members - before[1],
            groups.retried - before[2]) == (2, 1 + len(calls), 0)
    return out


async def _issues(h: Harness) -> dict[str, Issue]:
    async with h.runtime.db.read() as s:
        return {i.id: i for i in (await s.exec(select(Issue))).all()}


async def test_a_group_mixing_decisions_and_tools_decides_as_one_after_the_other(
        harness: Harness) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    seed = await _propose(h, agent, title="to update")
    issue_id = (await changes.approve(rita, seed)).entity_id
    assert issue_id is not None
    lead = await _propose(h, agent, title="lead")
    web1, ops1, web2 = (await _propose(h, agent, title="w1"),
                        await _propose(h, agent, project_key="OPS", title="o1"),
                        await _propose(h, agent, title="w2"))
    upd = await _propose(h, agent, "update_issue", issue_key="WEB-1", title="updated")
    rej, gone = await _propose(h, agent, title="no"), await _propose(h, agent, title="late")
    await _overdue(h, gone)

    out = await _in_one_group(h, lambda: changes.approve(rita, lead), [
        lambda: changes.approve(rita, web1),
        lambda: changes.approve(rita, web1),  # the same change again: loses
        lambda: changes.approve(rita, ops1),
        lambda: changes.reject(rita, rej, "not now"),
        lambda: changes.approve(rita, upd),
        lambda: changes._decide(tenant_id, gone, Status.EXPIRED, None, None,
                                only_overdue=True),
        lambda: changes.approve(rita, web2),
    ])
    first, second, ops, rejected, updated, expired, last = out
    assert isinstance(second, Conflict) and second.status == Status.APPROVED.value
    assert rejected.status == Status.REJECTED.value and rejected.reason == "not now"
    assert expired is not None and expired.status == Status.EXPIRED.value
    for change in (first, ops, updated, last):
        assert change.status == Status.APPROVED.value
        assert change.execution_result["success"] is True, change.execution_result
    issues = await _issues(h)
    # WEB: seed 1, lead 2, then in the group's order; OPS numbers on its own.
    assert [issues[c.entity_id].key for c in (first, ops, last)] == ["WEB-3", "OPS-1", "WEB-4"]
    assert updated.entity_id == issue_id and issues[issue_id].title == "updated"
    async with h.runtime.db.read() as s:
        numbers = {p.key: p.next_issue_number for p in (await s.exec(select(Project))).all()}
        stored = (await s.get(PendingChange, web1))
    assert numbers == {"WEB": 5, "OPS": 2}
    assert stored is not None and stored.execution_result == first.execution_result
    verdict = await h.runtime.audit.verify(tenant_id)
    # key.created, 8 proposals, 2 × 2 before the group; in it 4 × 2 approvals, a
    # rejection and an expiry.
    assert (verdict.ok, verdict.entries) == (True, 1 + 8 + 4 + 8 + 2), verdict


async def test_an_approval_that_misses_its_deadline_lets_the_expiry_in_its_group_win(
        harness: Harness) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    lead, late = await _propose(h, agent), await _propose(h, agent)
    await _overdue(h, late)
    approved, expired = await _in_one_group(h, lambda: changes.approve(rita, lead), [
        lambda: changes.approve(rita, late),
        lambda: changes._decide(tenant_id, late, Status.EXPIRED, None, None,
                                only_overdue=True),
    ])
    assert isinstance(approved, Conflict) and approved.status == Status.EXPIRED.value
    assert expired is not None and expired.status == Status.EXPIRED.value
    assert expired.execution_result is None
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_a_failing_execution_in_a_group_fails_only_its_change(
        harness: Harness) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    lead = await _propose(h, agent)
    ok1 = await _propose(h, agent, title="ok1")
    orphan = await _propose(h, agent, project_key="OPS", title="orphan")
    ok2 = await _propose(h, agent, title="ok2")
    async with h.runtime.db.write() as s:  # its project goes before the approval
        await s.exec(delete(Project).where(col(Project.key) == "OPS"))
    groups = changes.decisions
    retried = groups.retried
    out: dict[str, PendingChange] = {}

    async def approve(cid: str) -> None:
        out[cid] = await changes.approve(rita, cid)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for cid in (lead, ok1, orphan, ok2):
                tg.start_soon(approve, cid)
    assert groups.retried == retried + 1  # the group of three failed, then each alone
    assert out[orphan].execution_result == {
        "success": False, "entityId": None, "error": "project OPS no longer exists"}
    issues = await _issues(h)
    assert sorted(issues[out[c].entity_id].key  # type: ignore[index]
                  for c in (lead, ok1, ok2)) == ["WEB-1", "WEB-2", "WEB-3"]
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_a_decided_change_is_the_row_as_stored(harness: Harness) -> None:
    """What a decision hands on (the REST answer, the event, the audit entry) is the
    claimed row itself, made without the model's constructor and, on SQLite, read off
    SQLite's own cursor: every column must equal what a fresh session reads back (JSON
    decoded, datetimes as the store reads them, booleans) — alone, in a group, edited, rejected and
    expired."""
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    alone = await changes.approve(rita, await _propose(h, agent, title="alone"))
    edited = await changes.approve(rita, await _propose(h, agent, title="before"), {
        "project_key": "OPS", "title": "after", "type": "Bug"})
    grouped_ids = [await _propose(h, agent, title=f"g{i}") for i in range(3)]
    rejected_id, overdue_id = await _propose(h, agent), await _propose(h, agent)
    await _overdue(h, overdue_id)
    lead: list[PendingChange] = []

    async def approve_lead() -> None:
        lead.append(await changes.approve(rita, grouped_ids[0]))

    got = lead + await _in_one_group(h, approve_lead, [
        *(lambda i=i: changes.approve(rita, i) for i in grouped_ids[1:]),  # type: ignore[misc]
        lambda: changes.reject(rita, rejected_id, "no")])
    (expired,) = await changes.expire_due()
    decided = [alone, edited, *got, expired]
    assert [d.status for d in decided] == ["Approved"] * 5 + ["Rejected", "Expired"]
    columns = [c for c in PendingChange.model_fields if c != "announced_at"]
    async with h.runtime.db.read() as s:
        for change in decided:
            assert isinstance(change, PendingChange)
            stored = await s.get(PendingChange, change.id)
            assert stored is not None
            assert {c: getattr(change, c) for c in columns} == {
                c: getattr(stored, c) for c in columns}, change.status
            assert change.decided_at is not None
    assert edited.edited is True and edited.arguments["project_key"] == "OPS"
    assert alone.execution_result is not None and alone.execution_result["success"]
