"""Group commit (store/groups.py): concurrent decisions of a tenant share a transaction,
one member's failure fails only that member, tenants do not wait for each other."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from sqlmodel import Session, col, select, update

from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.groups import TransactionGroups
from colaflow_mcp.store.tables import Issue, Project, Tenant
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _add(slug: str, fail: bool = False) -> Fn:
    def fn(s: Session) -> str:
        s.add(Tenant(slug=slug, name=slug))
        s.flush()
        if fail:
            raise ValueError(f"{slug} refused")
        return slug
    return fn


Fn = Callable[[Session], str]


def _each(finished: list[list[str]] | None = None) -> Callable[[Session, str, list[Fn]], list[str]]:
    """A body running each member's function in turn (and noting each group's values)."""
    def body(s: Session, key: str, fns: list[Fn]) -> list[str]:
        values = [fn(s) for fn in fns]
        if finished is not None:
            finished.append(values)
        return values
    return body


async def _slugs(db: Database) -> list[str]:
    async with db.read() as s:
        return sorted(t.slug for t in (await s.exec(select(Tenant))).all())


async def test_concurrent_members_share_transactions_and_fail_alone(
        any_database_url: str) -> None:
    db = Database(any_database_url)
    await db.create_schema()
    finished: list[list[str]] = []
    groups: TransactionGroups[Fn, str] = TransactionGroups(db, _each(finished))
    results: dict[str, object] = {}

    async def one(slug: str, fail: bool = False) -> None:
        try:
            results[slug] = await groups.run("tenant-a", _add(slug, fail))
        except ValueError as exc:
            results[slug] = exc

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(one, f"ok{i}")
        oks = [f"ok{i}" for i in range(12)]
        assert results == {s: s for s in oks}
        # Fewer transactions than members; ``finish`` saw each value once.
        assert groups.members == 12 and groups.transactions < 12
        assert sorted(v for f in finished for v in f) == sorted(oks)
        assert groups.retried == 0

        # A member that raises: its group is rolled back and each member runs alone, so
        # only that member fails.
        results.clear()
        finished.clear()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(12, 16):
                    tg.start_soon(one, f"ok{i}")
                tg.start_soon(one, "bad", True)
                for i in range(16, 20):
                    tg.start_soon(one, f"ok{i}")
        more = [f"ok{i}" for i in range(12, 20)]
        assert isinstance(results.pop("bad"), ValueError)
        assert results == {s: s for s in more}
        assert await _slugs(db) == sorted(oks + more)  # the failing member's row is gone
        assert groups.retried >= 1
        assert sorted(v for f in finished for v in f) == sorted(more)
    finally:
        await db.dispose()


async def test_tenants_do_not_wait_for_each_other(any_database_url: str) -> None:
    db = Database(any_database_url)
    if db.is_sqlite:
        await db.dispose()
        pytest.skip("SQLite writers take turns on one lock by design (one writer)")
    await db.create_schema()
    groups: TransactionGroups[Fn, str] = TransactionGroups(db, _each())
    entered = anyio.Event()
    await groups.run("setup", _add("locked"))

    def waits_on_a_row(s: Session) -> str:
        entered.set()  # on PostgreSQL this runs on the event loop (run_sync)
        s.connection().execute(
            update(Tenant).where(col(Tenant.slug) == "locked").values(name="changed"))
        return "a"

    done_a = anyio.Event()

    async def tenant_a() -> None:
        assert await groups.run("tenant-a", waits_on_a_row) == "a"
        done_a.set()

    try:
        async with db.engine.connect() as blocker:
            await blocker.begin()
            await blocker.execute(select(Tenant).where(col(Tenant.slug) == "locked")
                                  .with_for_update())
            async with anyio.create_task_group() as tg:
                tg.start_soon(tenant_a)
                with anyio.fail_after(10):
                    await entered.wait()
                    # tenant-a's transaction waits on the row; tenant-b's commits.
                    assert await groups.run("tenant-b", _add("other")) == "other"
                assert not done_a.is_set()
                await blocker.rollback()
                with anyio.fail_after(10):
                    await done_a.wait()
        assert await _slugs(db) == ["locked", "other"]
    finally:
        await db.dispose()


async def test_concurrent_approvals_number_issues_once_each_and_chain_audit(
        harness: Harness) -> None:
    h = harness
    key = await h.agent_key("acme")
    await h.project("acme")
    token = await h.reviewer_token("acme")
    ids = [(await h.propose(key, arguments={"project_key": "WEB", "title": f"t{i}"}))["id"]
           for i in range(10)]
    answers: list[tuple[int, dict[str, object]]] = []

    async def approve(cid: str) -> None:
        r = await h.approve(token, cid)
        answers.append((r.status_code, r.json()))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(approve, cid)
            tg.start_soon(approve, ids[0])  # the same change twice at once: one wins
    assert sorted(code for code, _ in answers) == [200] * 10 + [409], answers
    assert all(body["executionResult"]["success"] is True  # type: ignore[index]
               for code, body in answers if code == 200)
    async with h.runtime.db.read() as s:
        numbers = sorted(i.number for i in (await s.exec(select(Issue))).all())
        project = (await s.exec(select(Project))).one()
    assert numbers == list(range(1, 11))
    assert project.next_issue_number == 11
    verdict = await h.runtime.audit.verify(project.tenant_id)
    # key.created, 10 × change.proposed, 10 × (change.approved + change.executed)
    assert (verdict.ok, verdict.entries) == (True, 31), verdict
