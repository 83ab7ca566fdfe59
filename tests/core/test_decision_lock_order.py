"""Decision transactions of one tenant on two instances at once (PostgreSQL): the
tenant's audit head, locked by each transaction's first statement (the claim,
``NATIVE_LOCK_HEAD_CLAIM_MANY``) before any change row, orders them at the database, and
neither waits holding a change row. Two of them deciding the same change: exactly one
wins. One failing while the other is in flight: only its failing member fails. The audit
chain stays valid and gap-free."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from sqlalchemy import delete
from sqlmodel import col, select

from colaflow_mcp.domain import recording
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import Conflict
from colaflow_mcp.store.tables import AuditEntry, Issue, PendingChange, Project, Status
from tests.harness import Harness, fast_settings, in_process, two_projects

pytestmark = pytest.mark.anyio


@pytest.fixture
async def harnesses(any_database_url: str) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two instances on one database."""
    if any_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: SQLite has one writer, one transaction at a time")
    settings = fast_settings(any_database_url, expiry_max_wait_seconds=3600.0)
    async with in_process(settings) as one, in_process(settings) as two:
        yield one, two


async def _propose(h: Harness, agent: Principal, project_key: str = "WEB",
                   title: str = "t") -> str:
    return (await h.runtime.changes.propose(
        agent, "create_issue", {"project_key": project_key, "title": title})).id


async def _connect(h: Harness) -> Any:
    return await asyncpg.connect(h.runtime.settings.database_url)


@asynccontextmanager
async def _head_held(h: Harness, tenant_id: str) -> AsyncIterator[None]:
    """The tenant's audit head locked by another connection for the block."""
    conn = await _connect(h)
    try:
        tx = conn.transaction()
        await tx.start()
        assert await conn.fetch("SELECT seq FROM audit_head WHERE tenant_id = $1 "
                                "FOR UPDATE", tenant_id)
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def _waiting_on_locks(h: Harness, n: int) -> None:
    """Until ``n`` of the app's transactions wait on a row lock at the database (state of
    another process, with no event to wait on: asked again until true, within 10 s)."""
    conn = await _connect(h)
    try:
        with anyio.fail_after(10):
            while await conn.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'") != n:
                await anyio.sleep(0.01)
    finally:
        await conn.close()


async def _outcome(call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except Exception as exc:
        return exc


async def _chain_ok(h: Harness, tenant_id: str) -> list[AuditEntry]:
    verdict = await h.runtime.audit.verify(tenant_id)
    assert verdict.ok, verdict.describe()
    async with h.runtime.db.read() as s:
        entries = list((await s.exec(select(AuditEntry).where(
            col(AuditEntry.tenant_id) == tenant_id).order_by(col(AuditEntry.seq)))).all())
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert verdict.entries == len(entries)
    return entries


async def test_two_instances_deciding_one_change_at_once_exactly_one_wins(
        harnesses: tuple[Harness, Harness]) -> None:
    h, changes, other = harnesses[0], harnesses[0].runtime.changes, harnesses[1].runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    x, y = await _propose(h, agent, title="x"), await _propose(h, agent, title="y")
    out: dict[str, Any] = {}

    async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        out[name] = await _outcome(call)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            async with _head_held(h, tenant_id):
                tg.start_soon(run, "approve", lambda: changes.approve(rita, x))
                tg.start_soon(run, "reject", lambda: other.reject(rita, x, "no"))
                # Both transactions are at the database, waiting for the head …
                await _waiting_on_locks(h, 2)
                # … and neither holds the change's row (head first: no deadlock order).
                probe = await _connect(h)
                try:
                    async with probe.transaction():
                        assert await probe.fetch(
                            "SELECT id FROM pending_change WHERE id = $1 FOR UPDATE NOWAIT", x)
                finally:
                    await probe.close()
                tg.start_soon(run, "other", lambda: changes.approve(rita, y))
                await anyio.wait_all_tasks_blocked()  # y waits in line for the next group

    won = [k for k in ("approve", "reject") if not isinstance(out[k], Exception)]
    assert len(won) == 1, out
    lost = out["reject" if won == ["approve"] else "approve"]
    status = out[won[0]].status
    assert isinstance(lost, Conflict) and lost.status == status
    assert out["other"].status == Status.APPROVED.value
    async with h.runtime.db.read() as s:
        stored = await s.get(PendingChange, x)
        issues = (await s.exec(select(Issue))).all()
    assert stored is not None and stored.status == status
    # One issue per approval that won, and nothing else.
    assert len(issues) == 1 + (status == Status.APPROVED.value)
    entries = await _chain_ok(h, tenant_id)
    decided_x = [e.action for e in entries if e.change_id == x]
    assert decided_x == [recording.PROPOSED, *(
        [recording.APPROVED, recording.EXECUTED] if status == Status.APPROVED.value
        else [recording.REJECTED])], decided_x


async def test_a_transaction_failing_while_another_is_in_flight_fails_only_its_member(
        harnesses: tuple[Harness, Harness]) -> None:
    h, changes, other = harnesses[0], harnesses[0].runtime.changes, harnesses[1].runtime.changes
    tenant_id, agent, rita = await two_projects(h)
    a, b = await _propose(h, agent, title="a"), await _propose(h, agent, title="b")
    orphan = await _propose(h, agent, project_key="OPS", title="orphan")
    c = await _propose(h, agent, title="c")
    async with h.runtime.db.write() as s:  # its project goes before the approval
        await s.exec(delete(Project).where(col(Project.key) == "OPS"))
    groups = changes.decisions
    retried, transactions = groups.retried, groups.transactions
    out: dict[str, Any] = {}

    async def approve(cid: str, on: Any = changes) -> None:
        out[cid] = await _outcome(lambda: on.approve(rita, cid))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            async with _head_held(h, tenant_id):
                tg.start_soon(approve, a)
                tg.start_soon(approve, b, other)
                await _waiting_on_locks(h, 2)  # a's (first instance) and b's (second)
                tg.start_soon(approve, orphan)
                tg.start_soon(approve, c)
                await anyio.wait_all_tasks_blocked()  # the next group there: orphan, c

    # On the first instance: a alone, then the group of orphan and c failed (b's
    # transaction may still have been in flight) and each ran alone.
    assert groups.retried == retried + 1
    assert groups.transactions == transactions + 3
    for cid in (a, b, c):
        assert out[cid].status == Status.APPROVED.value
        assert out[cid].execution_result["success"] is True, out[cid].execution_result
    assert out[orphan].status == Status.APPROVED.value
    assert out[orphan].execution_result == {
        "success": False, "entityId": None, "error": "project OPS no longer exists"}
    async with h.runtime.db.read() as s:
        issues = {i.id: i.key for i in (await s.exec(select(Issue))).all()}
    assert sorted(issues[out[cid].entity_id] for cid in (a, b, c)) == [
        "WEB-1", "WEB-2", "WEB-3"]
    entries = await _chain_ok(h, tenant_id)
    for cid in (a, b, c, orphan):
        assert [e.action for e in entries if e.change_id == cid] == [
            recording.PROPOSED, recording.APPROVED, recording.EXECUTED]
