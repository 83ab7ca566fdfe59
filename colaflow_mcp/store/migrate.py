"""Versioned schema migrations: Alembic over the app's own async drivers, no alembic.ini.

Every schema change is a revision in ``migrations/versions``. ``upgrade`` and ``downgrade``
run in one transaction behind a lock, so that processes starting at once take turns:

- PostgreSQL: ``pg_advisory_xact_lock(LOCK_ID)`` is the transaction's first statement;
  the others wait on it, then find the schema at head and go on.
- SQLite: the transaction is ``BEGIN IMMEDIATE`` (the file's write lock).

A database made by release 0.1.0 has tables but no version table: it is brought to the
baseline (tables or columns that an older build lacked are added, as the old start-up
upgrader did) and stamped at ``BASELINE``, never rebuilt.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from colaflow_mcp.store.migrations import VERSION_TABLE, baseline

logger = logging.getLogger(__name__)
T = TypeVar("T")

BASELINE = "0001_baseline"
# "colaflow" in ASCII: the key of the PostgreSQL advisory lock migrations run under.
LOCK_ID = 0x636F6C61666C6F77
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# What start-up (serve, and the CLI commands other than ``db``) does with an old schema.
MODES = ("auto", "check")


class _QuietAlembic(logging.Filter):
    """Drop the two lines alembic logs on every run, even when there is nothing to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_QuietAlembic())


class SchemaError(RuntimeError):
    """The schema cannot be used or changed as asked; the message says what to run."""


class UnreachableError(RuntimeError):
    """No connection to the database could be opened; the message says which and why
    (never its password)."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database is: ``empty``, ``unversioned`` (release 0.1.0) or ``versioned``."""

    revision: str | None
    head: str
    state: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    def describe(self) -> str:
        """One phrase for people."""
        if self.state == "empty":
            return "empty (no tables)"
        if self.state == "unversioned":
            return "unversioned (made by release 0.1.0, before versioned migrations)"
        if self.at_head:
            return f"{self.revision} (head)"
        if self.revision not in {r.id for r in history()}:
            return (f"{self.revision} (newer than this release knows, its newest is "
                    f"{self.head}: a newer release upgraded it)")
        return f"{self.revision} (behind this release's {self.head}: `colaflow-mcp db upgrade`)"


@dataclass(frozen=True)
class Moved:
    """What an upgrade or downgrade did."""

    before: SchemaState
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before.revision != self.after or self.before.state == "unversioned"


@dataclass(frozen=True)
class Revision:
    """One revision of the history."""

    id: str
    down: str | None
    description: str
    is_head: bool
    # What taking it back does and loses (its ``downgrade`` docstring).
    downgrade: str = ""


def alembic_config(connection: Connection | None = None) -> Config:
    """The configuration alembic would read from alembic.ini, built in code."""
    cfg = Config(stdout=sys.stderr)  # alembic's own messages are logs, not results
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this release knows."""
    found = _script().get_current_head()
    assert found is not None, "no revisions in colaflow_mcp/store/migrations/versions"
    return found


def history() -> list[Revision]:
    """Every revision, newest first."""
    script = _script()
    heads = set(script.get_heads())
    out = []
    for rev in script.walk_revisions():
        down = rev.down_revision
        undo = getattr(getattr(rev.module, "downgrade", None), "__doc__", None) or ""
        out.append(Revision(rev.revision, down if isinstance(down, str | None) else ",".join(down),
                            _notes(rev.longdoc or ""), rev.revision in heads,
                            " ".join(undo.split())))
    return out


def _notes(docstring: str) -> str:
    """A revision's docstring without the lines Alembic writes into every one: what it
    changes and the notes an operator must read before upgrading (data it drops, what it
    cannot undo, history it does not carry over)."""
    lines = [line.rstrip() for line in docstring.strip().splitlines()
             if not line.startswith(("Revision ID:", "Revises:", "Create Date:"))]
    return "\n".join(lines).strip()


async def current(url: str, lock_timeout: float = 600.0) -> SchemaState:
    """Where the database is (read only, no lock; SQLite may wait for a writer)."""
    engine = _engine(url, lock_timeout)
    try:
        conn = await _connect(engine, lock_timeout)
        try:
            return await conn.run_sync(_state)
        finally:
            await conn.close()
    finally:
        await engine.dispose()


async def upgrade(url: str, to: str = "head", lock_timeout: float = 600.0) -> Moved:
    """Bring the schema to ``to`` (adopting a release-0.1.0 database first), under the lock."""
    return await _locked(url, lock_timeout, lambda conn: _upgrade(conn, to))


async def downgrade(url: str, to: str, lock_timeout: float = 600.0) -> Moved:
    """Take the schema back to ``to`` (``base``: no tables), under the lock."""
    return await _locked(url, lock_timeout, lambda conn: _downgrade(conn, to))


async def new_revision(url: str, message: str, autogenerate: bool = True) -> str:
    """(Developers) write ``versions/NNNN_slug.py``: the models' difference from the
    database at ``url`` (which must be at head), or an empty revision. Returns its path."""
    slug = "_".join("".join(ch if ch.isalnum() else " " for ch in message.lower()).split())
    rev_id = f"{int(head().split('_')[0]) + 1:04d}_{slug[:40]}"

    def write(conn: Connection) -> str:
        cfg = alembic_config(conn)
        cfg.set_main_option("file_template", "%%(rev)s")
        script = command.revision(cfg, message, autogenerate=autogenerate, rev_id=rev_id)
        assert script is not None and not isinstance(script, list)
        return str(script.path)

    try:
        return await _locked(url, 30.0, write)
    finally:
        _script.cache_clear()


async def ensure(url: str, mode: str = "auto", lock_timeout: float = 600.0) -> None:
    """What start-up does: upgrade to head (``auto``) or refuse an old schema (``check``)."""
    if mode not in MODES:
        raise ValueError(f"COLAFLOW_SCHEMA_UPGRADE must be one of {', '.join(MODES)}, "
                         f"not {mode!r}")
    if mode == "auto":
        moved = await upgrade(url, "head", lock_timeout)
        if moved.changed:
            logger.info("database schema upgraded: %s -> %s", moved.before.describe(),
                        moved.after)
        return
    state = await current(url, lock_timeout)
    _check_known(state)
    if not state.at_head:
        raise SchemaError(
            f"the database schema is {state.describe()}, this release needs {state.head}: "
            "run `colaflow-mcp db upgrade` (COLAFLOW_SCHEMA_UPGRADE=check: start-up does not "
            "upgrade by itself)")


def _engine(url: str, lock_timeout: float) -> AsyncEngine:
    u = make_url(url)
    if not u.get_dialect().is_async:
        raise ValueError("store.migrate takes an async database URL (see db.async_url)")
    if u.get_backend_name() != "sqlite":
        return create_async_engine(u, poolclass=NullPool)
    engine = create_async_engine(u, poolclass=NullPool, connect_args={"timeout": lock_timeout})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
        # The journal mode the app uses (db.py), set before any write: switching a file to
        # WAL while another process holds its write lock fails at once, without waiting.
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        # Batch migrations copy, drop and rename tables: enforcing foreign keys midway
        # would cascade or fail (SQLite's documented procedure turns them off).
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock now: another process migrating makes us wait, not fail.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def _locked(url: str, lock_timeout: float, fn: Callable[[Connection], T]) -> T:
    engine = _engine(url, lock_timeout)
    try:
        conn = await _lock(engine, lock_timeout)
        try:
            # Alembic keeps its context in module globals: one migration at a time per
            # process, which the lock guarantees (the transaction ends after this).
            try:
                result = await conn.run_sync(fn)
            except CommandError as exc:  # e.g. an unknown revision asked for
                raise SchemaError(str(exc)) from None
            await conn.commit()
            return result
        finally:
            await conn.close()  # rolls back whatever was not committed
    finally:
        await engine.dispose()


async def _lock(engine: AsyncEngine, lock_timeout: float) -> AsyncConnection:
    """A connection in a transaction that holds the migration lock."""
    conn = await _connect(engine, lock_timeout)  # SQLite: may wait on the journal-mode switch
    try:
        await conn.begin()  # SQLite: BEGIN IMMEDIATE waits for the write lock
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT set_config('lock_timeout', :t, true)"),
                               {"t": f"{max(1, int(lock_timeout * 1000))}ms"})
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
        return conn
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, DBAPIError):
            raise _lock_error(exc, lock_timeout) from None
        raise


async def _connect(engine: AsyncEngine, lock_timeout: float) -> AsyncConnection:
    """A connection, or an error that says in one line which database could not be
    opened and why (a missing folder, a refused port, an unknown database)."""
    u = engine.url
    if u.get_backend_name() == "sqlite":  # (the file system, off the event loop)
        # Checked first: aiosqlite, failing to open, leaves its thread a reply for a loop
        # that may be closed by then (a stray traceback after the one-line error).
        where, problem = await anyio.to_thread.run_sync(_sqlite_problem, u.database or "")
        if problem:
            raise UnreachableError(f"cannot open the database: {where}: {problem}")
    else:
        where = u.set(drivername=u.get_backend_name()).render_as_string(hide_password=True)
    deadline = anyio.current_time() + lock_timeout
    pause = 0.005
    while True:
        try:
            return await engine.connect()
        except (DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError):
                locked = _lock_error(exc, lock_timeout)
                if locked is not exc:
                    # SQLite: the connection's switch to WAL (``_engine``) fails at once,
                    # without the busy wait, while another process holds the write lock
                    # of a file not yet in WAL (a first migration in progress): try again
                    # until the lock timeout, backing off.
                    if (u.get_backend_name() == "sqlite"
                            and anyio.current_time() + pause < deadline):
                        await _wait_to_retry(pause)
                        pause = min(pause * 2, 0.25)
                        continue
                    raise locked from None
            reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip()
            raise UnreachableError(f"cannot open the database: {where}: {reason}") from None


async def _wait_to_retry(seconds: float) -> None:
    """The pause before the next connection attempt (a seam for the tests)."""
    await anyio.sleep(seconds)


def _sqlite_problem(database: str) -> tuple[str, str | None]:
    """How to name a SQLite database in an error, and why it cannot be opened (``None``:
    it can). Opened here once with the driver itself, so that a failure is met on this
    thread, not on aiosqlite's."""
    if not database or database == ":memory:":
        return "SQLite in memory", None
    path = Path(database).resolve()
    where = (f"SQLite file {path} (its folder must exist and be writable; "
             "sqlite:///relative/path.db or sqlite:////absolute/path.db)")
    if not path.parent.is_dir():
        return where, "no such folder"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        # Even an existing file needs it: the journal files (-wal, -shm) are made beside it.
        return where, f"the folder {path.parent} is not writable by this user"
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        return where, str(exc)
    return where, None


def _lock_error(exc: DBAPIError, lock_timeout: float) -> Exception:
    """A lock wait that timed out, said plainly; any other error as it was."""
    orig = exc.orig
    if not (getattr(orig, "sqlstate", None) == "55P03"  # PostgreSQL: lock_timeout
            or "database is locked" in str(orig)):  # SQLite: busy timeout
        return exc
    return SchemaError(
        f"no schema migration lock within {lock_timeout:g}s: another process is migrating "
        f"this database (or holds a long write transaction); try again when it is done "
        f"({orig})")


def _state(conn: Connection) -> SchemaState:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    revision = ctx.get_current_revision()
    if revision is not None:
        return SchemaState(revision, head(), "versioned")
    ours = set(inspect(conn).get_table_names()) & set(baseline.metadata.tables)
    return SchemaState(None, head(), "unversioned" if ours else "empty")


def _check_known(state: SchemaState) -> None:
    if state.revision is not None and state.revision not in {r.id for r in history()}:
        raise SchemaError(
            f"the database schema is at revision {state.revision}, which this release does "
            f"not know (its newest is {state.head}): a newer release upgraded it. Run that "
            f"release, or with it `colaflow-mcp db downgrade {state.head}`")


def _upgrade(conn: Connection, to: str) -> Moved:
    before = _state(conn)
    _check_known(before)
    if before.at_head and to == "head":
        return Moved(before, before.revision)  # the usual start-up: nothing to load or run
    if before.state == "unversioned":
        _adopt_release_0_1(conn)
        command.stamp(alembic_config(conn), BASELINE)
        logger.info("database made by release 0.1.0: stamped at %s", BASELINE)
    command.upgrade(alembic_config(conn), to)
    return Moved(before, _state(conn).revision)


def _downgrade(conn: Connection, to: str) -> Moved:
    before = _state(conn)
    _check_known(before)
    if before.state != "versioned":
        raise SchemaError(f"the database schema is {before.describe()}: nothing to downgrade")
    command.downgrade(alembic_config(conn), to)
    return Moved(before, _state(conn).revision)


def _adopt_release_0_1(conn: Connection) -> None:
    """Add what a build older than release 0.1.0 may lack (tables, columns, indexes)."""
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    for table in baseline.metadata.sorted_tables:
        if table.name not in existing:
            logger.info("schema adoption: creating table %s", table.name)
            table.create(conn)
            continue
        columns = {c["name"] for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                logger.info("schema adoption: adding %s.%s", table.name, column.name)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN "
                                     f"{_column_ddl(conn, table.name, column)}")
        indexes = {i["name"] for i in insp.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                logger.info("schema adoption: creating index %s", index.name)
                index.create(conn)


def _column_ddl(conn: Connection, table: str, column: Column[Any]) -> str:
    """A definition existing rows can take: NOT NULL only with the release's default."""
    ddl = (f"{conn.dialect.identifier_preparer.quote(column.name)} "
           f"{column.type.compile(dialect=conn.dialect)}")
    default = baseline.LEGACY_DEFAULTS.get((table, column.name))
    if default is None:
        return ddl
    literal = "'" + default.replace("'", "''") + "'" if isinstance(default, str) else default
    return f"{ddl} DEFAULT {literal} NOT NULL"
