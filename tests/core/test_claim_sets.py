"""A group's alike decisions claimed with one statement on SQLite (domain/claims.py:
``_claim_sets``, ``statements.claim_set``): each change still decided only if it is the
tenant's, still Pending and (not) past its deadline — the same outcome as one CLAIM per
decision, on both engines; on SQLite one statement per set of alike decisions, and that
statement reads the ids' primary keys, not an index of the tenant's or of every pending
change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import update
from sqlalchemy.dialects import sqlite
from sqlmodel import col

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import Conflict, NotFound
from colaflow_mcp.store import statements
from colaflow_mcp.store.tables import PendingChange, Status, utcnow
from tests.harness import Harness, fast_settings, in_process, two_projects

pytestmark = pytest.mark.anyio


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    """The app with its expiry loop asleep: the tests expire overdue changes themselves."""
    settings = fast_settings(any_database_url, expiry_max_wait_seconds=3600.0)
    async with in_process(settings) as h:
        yield h


@pytest.fixture
def sets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Every set-wise claim statement taken: (only_overdue, size)."""
    taken: list[tuple[bool, int]] = []
    real = statements.claim_set

    def spy(only_overdue: bool, n: int) -> Any:
        taken.append((only_overdue, n))
        return real(only_overdue, n)

    monkeypatch.setattr(statements, "claim_set", spy)
    return taken


async def _propose(h: Harness, agent: Principal, title: str = "t") -> str:
    return (await h.runtime.changes.propose(
        agent, "create_issue", {"project_key": "WEB", "title": title})).id


async def _overdue(h: Harness, change_id: str) -> None:
    async with h.runtime.db.write() as s:
        await s.exec(update(PendingChange).where(col(PendingChange.id) == change_id)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))


async def _group(h: Harness, lead: Any, calls: list[Any], after: int = 0) -> list[Any]:
    """``lead`` alone (its tenant idle), ``calls`` queued behind it into one transaction;
    each one's value or exception. Fails unless exactly those two transactions ran (and
    ``after`` more of one decision each: an overdue change expired when its approval
    lost)."""
    groups = h.runtime.changes.decisions
    before = groups.transactions, groups.members, groups.retried
    out: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            out[i] = await calls[i]()
        except Exception as exc:
            out[i] = exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead)
            for i in range(len(calls)):
                tg.start_soon(one, i)
    assert (groups.transactions - before[0], groups.members - before[1],
            groups.retried - before[2]) == (2 + after, 1 + len(calls) + after, 0)
    return out


async def _status(h: Harness, change_id: str) -> str:
    async with h.runtime.db.read() as s:
        change = await s.get(PendingChange, change_id)
    assert change is not None
    return change.status


async def test_alike_decisions_in_one_statement_decide_each_change_as_one_claim_would(
        harness: Harness, sets: list[tuple[bool, int]]) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    sam = Principal(kind="reviewer", tenant_id=tenant_id, tenant_slug=rita.tenant_slug,
                    user="sam")
    other_key = await h.agent_key(tenant="globex")
    await h.project(tenant="globex", key="WEB")
    other_agent = await h.runtime.auth.authenticate(other_key)
    assert other_agent is not None
    lead, ok, taken, late = [await _propose(h, agent, n)
                             for n in ("lead", "ok", "taken", "late")]
    by_sam = [await _propose(h, agent, f"sam{i}") for i in range(2)]
    no1, no2 = await _propose(h, agent, "no1"), await _propose(h, agent, "no2")
    foreign = await _propose(h, other_agent, "theirs")
    await changes.reject(rita, taken, "already")
    await _overdue(h, late)
    sets.clear()

    out = await _group(h, lambda: changes.approve(rita, lead), [
        lambda: changes.approve(rita, ok),
        lambda: changes.approve(rita, taken),  # decided before: loses
        lambda: changes.approve(rita, late),  # past its deadline: loses, then expires
        lambda: changes.approve(rita, foreign),  # another tenant's: not found
        *(lambda c=c: changes.approve(sam, c) for c in by_sam),
        lambda: changes.reject(rita, no1, "not now"),
        lambda: changes.reject(rita, no2, "not now"),
    ], after=1)
    approved, lost, missed, not_found, sam1, sam2, rejected1, rejected2 = out
    assert approved.status == "Approved" and approved.decided_by == "rita"
    assert approved.execution_result["success"] is True
    assert isinstance(lost, Conflict) and lost.status == "Rejected"
    assert isinstance(missed, Conflict) and missed.status == "Expired"
    assert isinstance(not_found, NotFound)
    assert await _status(h, foreign) == "Pending"
    assert [(c.status, c.decided_by) for c in (sam1, sam2)] == [("Approved", "sam")] * 2
    assert [(c.status, c.decided_by, c.reason) for c in (rejected1, rejected2)] == [
        ("Rejected", "rita", "not now")] * 2
    assert rejected1.execution_result is None
    if h.runtime.db.is_sqlite:  # rita's 4 approvals, sam's 2, the 2 rejections
        assert sorted(sets) == [(False, 2), (False, 2), (False, 4)], sets
    verdict = await h.runtime.audit.verify(tenant_id)
    # key.created, 8 proposals, a rejection before the group, an expiry after it (late,
    # when its approval lost), 4 approvals × 2 (lead, ok, sam's), 2 rejections.
    assert (verdict.ok, verdict.entries) == (True, 1 + 8 + 1 + 1 + 4 * 2 + 2), verdict
    assert (await h.runtime.audit.verify(other_agent.tenant_id)).ok


async def test_alike_expiries_in_one_statement_expire_only_the_overdue(
        harness: Harness, sets: list[tuple[bool, int]]) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    lead = await _propose(h, agent, "lead")
    due = [await _propose(h, agent, f"due{i}") for i in range(2)]
    not_yet = await _propose(h, agent, "not yet")
    for cid in due:
        await _overdue(h, cid)
    sets.clear()

    def expire(cid: str) -> Any:
        return lambda: changes._decide(tenant_id, cid, Status.EXPIRED, None, None,
                                       only_overdue=True)

    out = await _group(h, lambda: changes.approve(rita, lead),
                       [expire(due[0]), expire(not_yet), expire(due[1])])
    assert [None if c is None else c.status for c in out] == ["Expired", None, "Expired"]
    assert await _status(h, not_yet) == "Pending"
    if h.runtime.db.is_sqlite:
        assert sets == [(True, 3)], sets
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_the_set_wise_claim_reads_the_ids_primary_keys(harness: Harness) -> None:
    """SQLite has no statistics here: with the tenant, state and deadline as plain terms
    its planner took an index of every pending change (or of the tenant's changes)."""
    h = harness
    if not h.runtime.db.is_sqlite:
        pytest.skip("SQLite's planner")
    engine = h.runtime.db.sync_write_engine
    assert engine is not None
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for only_overdue in (False, True):
            sql = str(statements.claim_set(only_overdue, 4).compile(dialect=sqlite.dialect()))
            plan = [row[-1] for row in cursor.execute(
                "EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?"))]
            assert len(plan) == 1 and plan[0].startswith("SEARCH pending_change USING ")
            assert "(id=?)" in plan[0] and "ix_pending_change" not in plan[0], plan
