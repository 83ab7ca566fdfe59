"""A group of approvals decided in one statement (PostgreSQL, domain/decide_one.py, the
function of revision 0006): the database holds what the Python path leaves for the same
group (changes, issues, audit entries byte for byte in their JSON text, the chain head,
the rows the outbox announces), events go out, and everything the function cannot do
exactly like Python falls back to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from sqlalchemy import delete

from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import Conflict
from colaflow_mcp.store.tables import AuditEntry, AuditHead, PendingChange, Project, Status, utcnow
from tests.harness import Harness, fast_settings, in_process

pytestmark = pytest.mark.anyio

# Text the canonical JSON must escape exactly as Python's json.dumps does.
NASTY = 'q"uote \\ back\nnew\ttab \x01ctl é 😀 </script>'


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    if any_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: the one-statement path is a PostgreSQL function")
    # The expiry loop and the announce sweep asleep: the tests run them themselves.
    settings = fast_settings(any_database_url, expiry_max_wait_seconds=3600.0,
                             announce_grace_seconds=3600.0)
    async with in_process(settings) as h:
        yield h


class _Listener:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.events: list[DecisionEvent] = []

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append(event)


async def _tenant(h: Harness, slug: str) -> tuple[str, Principal, Principal]:
    key = await h.agent_key(tenant=slug)
    await h.project(tenant=slug, key="WEB")
    await h.project(tenant=slug, key="OPS", name="Operations")
    agent = await h.runtime.auth.authenticate(key)
    assert agent is not None
    reviewer = Principal(kind="reviewer", tenant_id=agent.tenant_id,
                         tenant_slug=agent.tenant_slug, user="rita " + NASTY)
    return agent.tenant_id, agent, reviewer


ISSUES = [
    {"project_key": "WEB", "title": "one " + NASTY},
    {"project_key": "OPS", "title": "two", "description": NASTY, "priority": "High"},
    {"project_key": "WEB", "title": "three", "type": "Bug", "assignee": "dana " + NASTY},
    {"project_key": "OPS", "title": "four"},
    {"project_key": "WEB", "title": "five"},
]


async def _propose(h: Harness, agent: Principal, tool: str = "create_issue",
                   **arguments: Any) -> str:
    return (await h.runtime.changes.propose(agent, tool, arguments)).id


async def _outcomes(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    out: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            out[i] = await calls[i]()
        except Exception as exc:
            out[i] = exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
    return out


async def _decide_in_groups(h: Harness, reviewer: Principal, ids: list[str]) -> None:
    """The first approval alone, the others as one group while it runs."""
    changes = h.runtime.changes
    out = await _outcomes([lambda cid=cid: changes.approve(reviewer, cid)  # type: ignore[misc]
                           for cid in ids])
    assert all(isinstance(o, PendingChange) for o in out), out


async def _snapshot(h: Harness, tenant_id: str, ids: list[str]) -> dict[str, Any]:
    """The tenant's rows with ids and times replaced by what they stand for."""
    conn = await asyncpg.connect(h.runtime.settings.database_url)
    try:
        issues = await conn.fetch(
            "SELECT i.id, i.key, i.number, i.title, i.description, i.type, i.status, "
            "i.priority, i.assignee, p.key AS project, i.created_at = i.updated_at AS same "
            "FROM issue i JOIN project p ON p.id = i.project_id WHERE i.tenant_id = $1 "
            "ORDER BY i.key", tenant_id)
        key_of = {r["id"]: r["key"] for r in issues}
        changes = await conn.fetch(
            "SELECT id, status, decided_by, reason, entity_id, execution_result::text AS r, "
            "decided_at IS NOT NULL AS decided, announced_at, edited, edited_by "
            "FROM pending_change WHERE id = ANY($1::text[])", ids)
        index = {cid: f"change{n}" for n, cid in enumerate(ids)}
        entries = await conn.fetch(
            "SELECT seq, actor_type, actor_id, actor_name, action, change_id, data::text AS d "
            "FROM audit_entry WHERE tenant_id = $1 AND action IN "
            "('change.approved', 'change.executed') ORDER BY seq", tenant_id)
        head = await conn.fetchrow("SELECT seq FROM audit_head WHERE tenant_id = $1",
                                   tenant_id)
    finally:
        await conn.close()

    def named(text: str | None) -> str | None:
        if text is None:
            return None
        for raw, key in key_of.items():
            text = text.replace(raw, key)
        return text

    by_id = {r["id"]: r for r in changes}
    return {
        "issues": [dict(r, id=None) for r in issues],
        "changes": [(index[cid], by_id[cid]["status"], by_id[cid]["decided_by"],
                     by_id[cid]["reason"], key_of.get(by_id[cid]["entity_id"]),
                     named(by_id[cid]["r"]), by_id[cid]["decided"], by_id[cid]["edited"],
                     by_id[cid]["edited_by"]) for cid in ids],
        "entries": [(r["seq"], r["actor_type"], r["actor_id"], r["actor_name"], r["action"],
                     index[r["change_id"]], named(r["d"])) for r in entries],
        "head": head["seq"],
    }


async def test_one_statement_leaves_what_the_python_path_leaves(harness: Harness) -> None:
    h, changes = harness, harness.runtime.changes
    groups = changes.decisions
    assert groups.first is not None
    first = groups.first
    snapshots = []
    for slug, one_statement in (("python", False), ("onestmt", True)):
        tenant_id, agent, reviewer = await _tenant(h, slug)
        ids = [await _propose(h, agent, **a) for a in ISSUES]
        listener = _Listener(tenant_id)
        for cid in ids:
            assert await h.runtime.notifier.subscribe(listener, cid) is not None
        groups.first = first if one_statement else None
        before = groups.transactions, groups.firsts, groups.retried
        await _decide_in_groups(h, reviewer, ids)
        assert groups.transactions - before[0] == 2 and groups.retried == before[2]
        assert groups.firsts - before[1] == (2 if one_statement else 0)
        # Events: one per change, approved, with the issue created.
        assert sorted(e.change_id for e in listener.events) == sorted(ids)
        for e in listener.events:
            assert e.status == Status.APPROVED.value
            assert e.payload["executionResult"]["success"] is True
            assert e.payload["entityId"] == e.payload["executionResult"]["entityId"]
        verdict = await h.runtime.audit.verify(tenant_id)
        assert verdict.ok and verdict.entries == 1 + len(ISSUES) * 3, verdict.describe()
        snapshots.append(await _snapshot(h, tenant_id, ids))
    python, onestmt = snapshots
    assert onestmt == python
    assert [i["key"] for i in onestmt["issues"]] == [
        "OPS-1", "OPS-2", "WEB-1", "WEB-2", "WEB-3"]
    assert onestmt["issues"][2]["title"] == "one " + NASTY


async def test_the_outbox_sweep_finds_a_decision_made_in_one_statement(
        harness: Harness) -> None:
    """Decided rows are left unannounced for the outbox, as the Python path leaves them."""
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")
    firsts = h.runtime.changes.decisions.firsts
    rows = await h.runtime.changes.decisions.first(  # type: ignore[misc]
        tenant_id, [_plain(cid, reviewer)])
    assert rows is not None and rows[0].change is not None
    assert rows[0].change.announced_at is None
    assert h.runtime.changes.decisions.firsts == firsts  # called directly, not a group
    swept = await h.runtime.recovery.sweep_unannounced(0.0)
    assert swept >= 1
    async with h.runtime.db.read() as s:
        row = await s.get(PendingChange, cid)
    assert row is not None and row.status == Status.APPROVED.value
    assert row.announced_at is not None


def _plain(cid: str, reviewer: Principal) -> Any:
    from colaflow_mcp.domain.changes import _Decision
    from colaflow_mcp.domain.recording import Actor
    return _Decision(cid, Status.APPROVED, reviewer.display, None, Actor.of(reviewer))


async def _one_approval_falls_back(h: Harness, reviewer: Principal, cid: str) -> Any:
    groups = h.runtime.changes.decisions
    before = groups.transactions, groups.firsts
    done = await h.runtime.changes.approve(reviewer, cid)
    assert groups.transactions - before[0] == 1 and groups.firsts == before[1]
    return done


async def test_a_tenant_with_webhooks_falls_back_and_gets_its_deliveries(
        harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")
    conn = await asyncpg.connect(h.runtime.settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO webhook_endpoint (id, tenant_id, url, events, secret, created_at) "
            "VALUES ('ep1', $1, 'https://example.invalid/h', "
            "'[\"pending_change.approved\"]', 'whsec_x', now())", tenant_id)
        done = await _one_approval_falls_back(h, reviewer, cid)
        assert done.execution_result["success"] is True
        queued = await conn.fetch("SELECT event_type FROM webhook_delivery "
                                  "WHERE change_id = $1", cid)
        assert [r["event_type"] for r in queued] == ["pending_change.approved"]
    finally:
        await conn.close()
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_another_tool_falls_back(harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    made = await h.runtime.changes.approve(
        reviewer, await _propose(h, agent, project_key="WEB", title="seed"))
    cid = await _propose(h, agent, "update_status", issue_key="WEB-1", status="Done")
    done = await _one_approval_falls_back(h, reviewer, cid)
    assert done.execution_result == {"success": True, "entityId": made.entity_id,
                                     "error": None}
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_a_missing_project_falls_back_and_fails_only_its_execution(
        harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="OPS", title="x")
    async with h.runtime.db.write() as s:
        await s.exec(delete(Project).where(Project.key == "OPS"))  # type: ignore[arg-type]
    groups = h.runtime.changes.decisions
    firsts = groups.firsts
    done = await h.runtime.changes.approve(reviewer, cid)
    assert groups.firsts == firsts
    assert done.status == Status.APPROVED.value
    assert done.execution_result is not None and done.execution_result["success"] is False
    assert "OPS" in done.execution_result["error"]
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_a_tenant_without_a_chain_head_falls_back(harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")
    async with h.runtime.db.write() as s:  # a chain that never started
        await s.exec(delete(AuditEntry).where(AuditEntry.tenant_id == tenant_id))  # type: ignore[arg-type]
        await s.exec(delete(AuditHead).where(AuditHead.tenant_id == tenant_id))  # type: ignore[arg-type]
    done = await _one_approval_falls_back(h, reviewer, cid)
    assert done.execution_result["success"] is True
    conn = await asyncpg.connect(h.runtime.settings.database_url)
    try:  # the Python path started a new head
        assert await conn.fetchval("SELECT seq FROM audit_head WHERE tenant_id = $1",
                                   tenant_id) == 2
    finally:
        await conn.close()
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_edits_rejections_and_expiries_take_the_python_path(harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    edited = await _propose(h, agent, project_key="WEB", title="x")
    groups = h.runtime.changes.decisions
    firsts = groups.firsts
    done = await h.runtime.changes.approve(
        reviewer, edited, {"project_key": "OPS", "title": "y"})
    assert done.edited and done.execution_result["success"] is True
    rejected = await h.runtime.changes.reject(
        reviewer, await _propose(h, agent, project_key="WEB", title="z"), "no")
    assert rejected.status == Status.REJECTED.value
    assert groups.firsts == firsts
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_the_same_change_twice_in_one_group_is_decided_once(harness: Harness) -> None:
    h, changes = harness, harness.runtime.changes
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    lead, twice = (await _propose(h, agent, project_key="WEB", title="a"),
                   await _propose(h, agent, project_key="WEB", title="b"))
    firsts = changes.decisions.firsts
    out = await _outcomes([lambda: changes.approve(reviewer, lead),
                           lambda: changes.approve(reviewer, twice),
                           lambda: changes.approve(reviewer, twice)])
    assert changes.decisions.firsts - firsts == 2
    assert isinstance(out[0], PendingChange)
    assert sorted(type(o).__name__ for o in out[1:]) == ["Conflict", "PendingChange"]
    assert [o.status for o in out if isinstance(o, Conflict)] == ["Approved"]
    verdict = await h.runtime.audit.verify(tenant_id)
    assert verdict.ok and verdict.entries == 1 + 2 + 2 * 2


async def test_an_overdue_change_is_not_approved_in_one_statement(harness: Harness) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")
    conn = await asyncpg.connect(h.runtime.settings.database_url)
    try:
        await conn.execute("UPDATE pending_change SET expires_at = $2 WHERE id = $1", cid,
                           utcnow())
    finally:
        await conn.close()
    with pytest.raises(Conflict) as lost:
        await h.runtime.changes.approve(reviewer, cid)
    assert lost.value.status == Status.EXPIRED.value
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_a_failing_statement_falls_back_to_the_python_path(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")

    async def broken(*_: Any) -> Any:
        raise OSError("connection reset")

    monkeypatch.setattr(h.runtime.db, "run_alone", broken)
    done = await _one_approval_falls_back(h, reviewer, cid)
    assert done.status == Status.APPROVED.value and done.execution_result["success"]
    assert (await h.runtime.audit.verify(tenant_id)).ok


async def test_an_answer_lost_after_the_commit_is_a_conflict_and_the_sweep_announces(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The known edge (domain/decide_one.py): committed by the server, the connection lost
    before the rows arrived. The reviewer hears Conflict (Approved); the rows are right and
    the announce sweep announces the decision."""
    h = harness
    tenant_id, agent, reviewer = await _tenant(h, "acme")
    cid = await _propose(h, agent, project_key="WEB", title="x")
    listener = _Listener(tenant_id)
    assert await h.runtime.notifier.subscribe(listener, cid) is not None
    real = h.runtime.db.run_alone

    async def lost(*args: Any) -> Any:
        await real(*args)
        raise OSError("connection reset after the commit")

    monkeypatch.setattr(h.runtime.db, "run_alone", lost)
    with pytest.raises(Conflict) as conflict:
        await h.runtime.changes.approve(reviewer, cid)
    assert conflict.value.status == Status.APPROVED.value
    assert listener.events == []
    assert await h.runtime.recovery.sweep_unannounced(0.0) == 1
    assert [e.change_id for e in listener.events] == [cid]
    verdict = await h.runtime.audit.verify(tenant_id)
    assert verdict.ok and verdict.entries == 1 + 1 + 2


async def test_sqlite_has_no_one_statement_path(any_database_url: str) -> None:
    settings = fast_settings(any_database_url, expiry_max_wait_seconds=3600.0)
    async with in_process(settings) as h:
        first = h.runtime.changes.decisions.first
        assert (first is None) == any_database_url.startswith("sqlite")
