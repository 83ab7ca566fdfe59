"""store/prepared.py: a prebuilt statement on SQLite's own cursor writes and reads what
``Connection.execute`` does (JSON, datetimes, several rows at once), in the caller's
transaction; on PostgreSQL it is ``Connection.execute``."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from colaflow_mcp.domain import admin
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange, WebhookEndpoint, new_pending_change, utcnow

pytestmark = pytest.mark.anyio


def _change(tenant_id: str, title: str) -> PendingChange:
    now = utcnow()
    return PendingChange(
        tenant_id=tenant_id, tool_name="create_issue", operation="Create",
        entity_type="Issue", arguments={"title": title, "n": [1, 2.5, None]},
        proposed_arguments={"title": title}, diff={"after": {"title": title}},
        summary=title, created_at=now, expires_at=now + timedelta(seconds=60))


async def test_prepared_rows_read_back_like_core_ones(any_database_url: str) -> None:
    db = Database(any_database_url)
    await db.create_schema()
    try:
        tenant = await admin.get_or_create_tenant(db, "acme")
        core, mine = _change(tenant.id, "core"), _change(tenant.id, "prepared")
        more = [_change(tenant.id, f"many {i}") for i in range(3)]

        def write(s: Session) -> list[object]:
            conn = s.connection()
            conn.execute(statements.INSERT_PENDING_CHANGE, statements.pending_change_row(core))
            prepared.run(conn, statements.INSERT_PENDING_CHANGE,
                         statements.pending_change_row(mine))
            prepared.run(conn, statements.INSERT_PENDING_CHANGE,
                         [statements.pending_change_row(c) for c in more])
            s.add(WebhookEndpoint(id="ep_1", tenant_id=tenant.id, url="https://x.example/",
                                  events=["pending_change.created"], secret="whsec_x"))
            s.flush()
            return prepared.run(conn, statements.WEBHOOK_TARGETS, {"p_tenant": tenant.id})

        targets = await db.transact(write)
        assert [tuple(t) for t in targets] == [("ep_1", ["pending_change.created"])]  # type: ignore[arg-type]

        async with db.read() as s:
            rows = {c.summary: c for c in (await s.exec(
                select(PendingChange).where(col(PendingChange.tenant_id) == tenant.id))).all()}
        assert sorted(rows) == sorted(["core", "prepared"] + [c.summary for c in more])
        for made in [core, mine, *more]:
            got = rows[made.summary]
            assert got.model_dump() == made.model_dump()  # JSON and datetimes included

        # In the caller's transaction: a rollback takes the prepared rows with it.
        def fail(s: Session) -> None:
            prepared.run(s.connection(), statements.INSERT_PENDING_CHANGE,
                         statements.pending_change_row(_change(tenant.id, "rolled back")))
            raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            await db.transact(fail)
        async with db.read() as s:
            assert (await s.exec(select(PendingChange).where(
                col(PendingChange.summary) == "rolled back"))).first() is None
    finally:
        await db.dispose()


def test_new_pending_change_is_the_object_the_constructor_makes() -> None:
    now = utcnow()
    given = {"tenant_id": "t1", "api_key_id": "k1", "api_key_name": "bot",
             "tool_name": "create_issue", "operation": "Create", "entity_type": "Issue",
             "arguments": {"title": "a"}, "proposed_arguments": {"title": "a"},
             "diff": {"after": {"title": "a"}}, "summary": "s", "created_at": now,
             "expires_at": now + timedelta(seconds=60)}
    made, fast = PendingChange(**given), new_pending_change(**given)
    assert fast.model_dump(exclude={"id"}) == made.model_dump(exclude={"id"})
    assert fast.model_fields_set == made.model_fields_set
    assert len(fast.id) == 36 and fast.id != made.id and fast.status == "Pending"
    # Defaults are made per change, never shared between two.
    a, b = new_pending_change(**given), new_pending_change(**given)
    assert a.id != b.id and a.execution_result is None and not a.edited
    other = {k: v for k, v in given.items() if k not in ("arguments", "diff")}
    c, d = new_pending_change(**other), new_pending_change(**other)
    assert c.arguments == {} and c.arguments is not d.arguments
    with pytest.raises(TypeError, match="missing columns: expires_at"):
        new_pending_change(**{k: v for k, v in given.items() if k != "expires_at"})
    with pytest.raises(TypeError, match="unknown columns: colour"):
        new_pending_change(**given, colour="red")


async def test_a_fast_made_change_is_written_and_read_back_whole(any_database_url: str
                                                                 ) -> None:
    db = Database(any_database_url)
    await db.create_schema()
    try:
        tenant = await admin.get_or_create_tenant(db, "acme")
        now = utcnow()
        change = new_pending_change(
            tenant_id=tenant.id, tool_name="create_issue", operation="Create",
            entity_type="Issue", arguments={"title": "t", "n": [1, 2.5, None]},
            proposed_arguments={"title": "t"}, diff={"after": {"title": "t"}},
            rationale="why", summary="fast", created_at=now,
            expires_at=now + timedelta(seconds=60))

        def write(s: Session) -> None:
            prepared.run(s.connection(), statements.INSERT_PENDING_CHANGE,
                         statements.pending_change_row(change))

        await db.transact(write)
        async with db.read() as s:
            got = await s.get(PendingChange, change.id)
        assert got is not None and got.model_dump() == change.model_dump()
    finally:
        await db.dispose()


def test_new_pending_change_works_as_a_process_s_first_use_of_the_orm() -> None:
    # A proposal may be the first thing a process does with the tables (an instance
    # started under load): the mappers are configured then, as the constructor would.
    code = ("from colaflow_mcp.store.tables import new_pending_change, utcnow\n"
            "c = new_pending_change(tenant_id='t', tool_name='create_issue', "
            "operation='Create', entity_type='Issue', expires_at=utcnow())\n"
            "print(c.tool_name, c.status, c.arguments)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "create_issue Pending {}"
