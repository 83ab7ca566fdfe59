"""Versioned migrations: a release-0.1.0 database is upgraded and still works; an empty one
is built from nothing; the baseline is that release's schema; instances take turns."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from colaflow_mcp.config import Settings
from colaflow_mcp.store import migrate
from colaflow_mcp.store.engine import Database, async_url
from colaflow_mcp.store.migrations import baseline
from tests.core.releasedb import FIXTURE, MANIFEST, pg_database, sqlite_release_copy
from tests.harness import fast_settings, in_process

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on each engine (PostgreSQL ones are dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    async with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def release_db(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A database written by release 0.1.0, and its manifest (keys, token, change ids)."""
    kind = str(request.param)
    if kind == "sqlite":
        yield sqlite_release_copy(tmp_path), MANIFEST[kind]
        return
    async with pg_database(release=True) as url:
        yield url, MANIFEST[kind]


async def _on(url: str, fn: Any) -> Any:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _model_drift(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE,
                                                 "compare_type": True})
    return list(compare_metadata(ctx, SQLModel.metadata))


def _pg_schema(conn: Connection) -> set[tuple[Any, ...]]:
    """Columns, constraints and indexes of the public schema, as PostgreSQL states them."""
    rows = conn.execute(text("""
        SELECT 'column', table_name || '.' || column_name, ordinal_position::text,
               data_type || coalesce('(' || character_maximum_length || ')', ''),
               is_nullable || ' ' || coalesce(column_default, '')
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid), ''
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index', tablename, indexname, indexdef, ''
          FROM pg_indexes WHERE schemaname = 'public'
    """)).all()
    return {tuple(r) for r in rows if migrate.VERSION_TABLE not in r[1] + r[2]}


def _sqlite_schema(path: str) -> set[tuple[Any, ...]]:
    """Every CREATE statement SQLite keeps, verbatim."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {tuple(r) for r in rows if r[2] != migrate.VERSION_TABLE}


async def test_empty_database_is_built_to_head_and_matches_the_models(empty_url: str) -> None:
    assert (await migrate.current(async_url(empty_url))).state == "empty"
    db = Database(empty_url)
    try:
        await db.create_schema()
    finally:
        await db.dispose()
    state = await migrate.current(async_url(empty_url))
    assert (state.state, state.revision, state.at_head) == ("versioned", migrate.head(), True)
    # Models and migrations agree: a model change without its revision fails here.
    assert await _on(empty_url, _model_drift) == []


async def test_baseline_is_exactly_the_schema_release_0_1_0_made(tmp_path: Path) -> None:
    empty = tmp_path / "baseline.db"
    await migrate.upgrade(async_url(f"sqlite:///{empty}"), migrate.BASELINE)
    assert _sqlite_schema(str(empty)) == _sqlite_schema(str(FIXTURE / "colaflow.db"))

    async with pg_database() as built, pg_database(release=True) as released:
        await migrate.upgrade(async_url(built), migrate.BASELINE)
        assert await _on(built, _pg_schema) == await _on(released, _pg_schema)


async def test_release_database_is_stamped_not_rebuilt(
        release_db: tuple[str, dict[str, Any]]) -> None:
    url, _ = release_db
    counts_sql = "SELECT (SELECT count(*) FROM pending_change), (SELECT count(*) FROM api_key)"
    before = await _on(url, lambda c: tuple(c.execute(text(counts_sql)).one()))
    assert (await migrate.current(async_url(url))).state == "unversioned"
    moved = await migrate.upgrade(async_url(url))
    assert (moved.before.state, moved.after) == ("unversioned", migrate.head())
    assert await _on(url, lambda c: tuple(c.execute(text(counts_sql)).one())) == before
    assert before == (7, 3)
    assert await _on(url, _model_drift) == []
    again = await migrate.upgrade(async_url(url))
    assert not again.changed


async def test_release_data_is_all_there_and_usable_after_upgrade(
        release_db: tuple[str, dict[str, Any]]) -> None:
    url, m = release_db
    changes = m["changes"]
    # The reviewer token was signed with the secret the release generated into cola_meta.
    settings = _settings(url)
    async with in_process(settings) as h:
        c = h.client
        agent, reviewer = _bearer(m["agentKey"]), _bearer(m["reviewerToken"])
        listed = (await c.get("/api/mcp/pending-changes?pageSize=100", headers=reviewer)).json()
        assert listed["total"] == 7
        status = {i["id"]: i["status"] for i in listed["items"]}
        assert {k: status[v] for k, v in changes.items()} == {
            "approvedCreate": "Approved", "approvedComment": "Approved", "rejected": "Rejected",
            "expired": "Expired", "pendingUpdate": "Pending", "pendingCreate": "Pending"}
        done = (await c.get(f"/api/mcp/pending-changes/{changes['approvedCreate']}",
                            headers=agent)).json()
        assert done["executionResult"] and done["decidedBy"] == "alice"
        rejected = (await c.get(f"/api/mcp/pending-changes/{changes['rejected']}",
                                headers=agent)).json()
        assert rejected["reason"] == "still needed"
        # 0002_reviewer_side backfilled who proposed them; none was edited or explained.
        for item in listed["items"]:
            assert item["proposedBy"] == {"keyId": m["agentKeyId"], "keyName": "fixture-agent"}
            assert item["proposedArguments"] == item["arguments"] and item["arguments"]
            assert (item["edited"], item["editedBy"], item["rationale"]) == (False, None, None)
        # The trail starts at the upgrade: empty until the first proposal or decision.
        r = await c.get("/api/audit", headers=reviewer)
        assert r.status_code == 200 and r.json() == {"entries": [], "next": None}

        projects = (await c.get("/api/projects", headers=reviewer)).json()["items"]
        assert sorted(p["key"] for p in projects) == m["projects"]["acme"]
        web1 = (await c.get("/api/issues/WEB-1", headers=agent)).json()
        assert web1["title"] == "Fix the login page" and web1["priority"] == "High"
        assert [x["body"] for x in web1["comments"]] == ["Seen on Safari."]
        assert (await c.get("/api/issues/WEB-2", headers=agent)).json()["title"] == "Dark mode"

        # The old pending changes are approved and executed now.
        r = await h.approve(m["reviewerToken"], changes["pendingUpdate"])
        assert r.status_code == 200 and r.json()["status"] == "Approved", r.text
        r = await h.approve(m["reviewerToken"], changes["pendingCreate"])
        assert r.status_code == 200 and r.json()["executionResult"], r.text
        web1 = (await c.get("/api/issues/WEB-1", headers=agent)).json()
        assert web1["title"] == "Fix the login loop"
        assert (await c.get("/api/issues/OPS-1", headers=agent)).json()["title"] == (
            "Rotate the certificates")
        # Decided changes stay decided.
        r = await h.approve(m["reviewerToken"], changes["rejected"])
        assert r.status_code == 409, r.text

        # The old agent key works, the revoked one does not.
        new = await h.propose(m["agentKey"], arguments={"project_key": "OPS", "title": "New"})
        assert new["status"] == "Pending"
        assert new["proposedBy"] == {"keyId": m["agentKeyId"], "keyName": "fixture-agent"}
        trail = (await c.get("/api/audit", headers=reviewer)).json()["entries"]
        assert [(e["seq"], e["action"], e["changeId"]) for e in trail] == [
            (1, "change.approved", changes["pendingUpdate"]),
            (2, "change.executed", changes["pendingUpdate"]),
            (3, "change.approved", changes["pendingCreate"]),
            (4, "change.executed", changes["pendingCreate"]),
            (5, "change.proposed", new["id"])]
        r = await c.get("/api/mcp/pending-changes", headers=_bearer(m["revokedKey"]))
        assert r.status_code == 401
        # The other tenant still sees none of acme's changes, only its own project.
        other = _bearer(m["otherTenantKey"])
        assert (await c.get("/api/mcp/pending-changes", headers=other)).json()["total"] == 0
        r = await c.get(f"/api/mcp/pending-changes/{changes['pendingCreate']}", headers=other)
        assert r.status_code == 404
        projects = (await c.get("/api/projects", headers=other)).json()["items"]
        assert [p["key"] for p in projects] == m["projects"]["globex"]


async def test_instances_starting_together_take_turns(empty_url: str) -> None:
    """Three start-ups at once on an empty database: all succeed, the schema is made once."""
    dbs = [Database(empty_url) for _ in range(3)]
    try:
        async with anyio.create_task_group() as tg:
            for db in dbs:
                tg.start_soon(db.create_schema)
    finally:
        for db in dbs:
            await db.dispose()
    assert (await migrate.current(async_url(empty_url))).at_head


async def test_a_start_up_meeting_a_first_migration_in_progress_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: while another process holds the write lock of a file not yet in WAL (its
    first migration), a start-up's switch to WAL fails at once, without the busy wait; the
    start-up tries again until the lock is free, not fail (CI saw three start-ups at once
    fail this way)."""
    path = tmp_path / "first.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_process (x INTEGER)")
    retried, released = anyio.Event(), anyio.Event()

    async def wait_to_retry(seconds: float) -> None:  # the pause: until the lock is free
        retried.set()
        await released.wait()

    monkeypatch.setattr(migrate, "_wait_to_retry", wait_to_retry)
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(migrate.upgrade, async_url(f"sqlite:///{path}"))
                await retried.wait()  # the start-up met the lock and waits, not failed
                holder.execute("COMMIT")
                released.set()
    finally:
        holder.close()
    assert (await migrate.current(async_url(f"sqlite:///{path}"))).at_head


async def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    url = async_url(empty_url)
    await migrate.upgrade(url)
    moved = await migrate.downgrade(url, "base")
    assert (moved.before.revision, moved.after) == (migrate.head(), None)
    assert set(await _on(empty_url, lambda c: inspect(c).get_table_names())) <= {
        migrate.VERSION_TABLE}
    assert (await migrate.current(url)).state == "empty"
    await migrate.upgrade(url)
    assert (await migrate.current(url)).at_head
    assert set(baseline.metadata.tables) <= set(
        await _on(empty_url, lambda c: inspect(c).get_table_names()))


@pytest.fixture
def with_example_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                          ) -> Iterator[tuple[str, str]]:
    """The migrations folder plus tests/fixtures/revision_example.py as its newest revision
    on top of the real head; (the example's id, the real head)."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    example = (FIXTURE.parent / "revision_example.py").read_text()
    real_head = migrate.head()
    on_head = example.replace('down_revision: str | None = "0001_baseline"',
                              f'down_revision: str | None = "{real_head}"')
    assert on_head != example
    (folder / "versions" / "zz_example_backfill.py").write_text(on_head)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", folder)
    migrate._script.cache_clear()
    yield "example_backfill", real_head
    migrate._script.cache_clear()


async def test_a_revision_with_a_backfill_runs_up_and_down_over_release_data(
        release_db: tuple[str, dict[str, Any]], with_example_revision: tuple[str, str]) -> None:
    url, _ = release_db
    example, real_head = with_example_revision
    moved = await migrate.upgrade(async_url(url))
    assert (moved.before.state, moved.after) == ("unversioned", example)
    rows = await _on(url, lambda c: c.execute(text(
        "SELECT id, arguments, example_proposed_arguments, example_edited "
        "FROM pending_change")).all())
    assert len(rows) == 7
    for _id, arguments, proposed, edited in rows:
        assert proposed == arguments and arguments and edited in (False, 0)

    moved = await migrate.downgrade(async_url(url), "-1")
    assert (moved.before.revision, moved.after) == (example, real_head)
    columns = await _on(url, lambda c: {x["name"] for x in inspect(c).get_columns(
        "pending_change")})
    assert not {"example_edited", "example_proposed_arguments"} & columns
    assert await _on(url, _model_drift) == []  # back to exactly what the models say
    assert await _on(url, lambda c: c.execute(text(
        "SELECT count(*) FROM pending_change")).scalar()) == 7
    assert (await migrate.upgrade(async_url(url))).after == example


async def test_check_mode_refuses_an_old_schema_naming_the_command(
        release_db: tuple[str, dict[str, Any]]) -> None:
    url, _ = release_db
    with pytest.raises(migrate.SchemaError, match="colaflow-mcp db upgrade"):
        async with in_process(_settings(url, schema_upgrade="check")):
            pass
    assert (await migrate.current(async_url(url))).state == "unversioned"  # untouched
    await migrate.upgrade(async_url(url))
    async with in_process(_settings(url, schema_upgrade="check")) as h:
        assert (await h.client.get("/health")).status_code == 200


async def test_a_schema_newer_than_this_release_is_refused(empty_url: str) -> None:
    url = async_url(empty_url)
    await migrate.upgrade(url)
    await _on(empty_url, lambda c: (
        c.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999_future'")),
        c.commit()))
    for mode in migrate.MODES:
        with pytest.raises(migrate.SchemaError, match="9999_future.*newer release"):
            await migrate.ensure(url, mode)


async def test_start_up_waits_for_the_lock_within_its_timeout(empty_url: str) -> None:
    """Another process migrating (holding the lock) makes start-up wait, bounded."""
    url = async_url(empty_url)
    holder = create_async_engine(url)
    try:
        async with holder.connect() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the file's write lock
            else:
                await conn.begin()
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                   {"k": migrate.LOCK_ID})
            with anyio.fail_after(10), pytest.raises(migrate.SchemaError,
                                                     match="another process"):
                await migrate.ensure(url, "auto", lock_timeout=0.3)
            await conn.rollback()
    finally:
        await holder.dispose()
    await migrate.ensure(url, "auto", lock_timeout=0.3)  # free: goes through
    assert (await migrate.current(url)).at_head


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _settings(url: str, **overrides: Any) -> Settings:
    return fast_settings(url, jwt_secret=None, **overrides)

