"""Async engine and sessions: SQLite (aiosqlite) by default, PostgreSQL (asyncpg)."""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import anyio
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from colaflow_mcp.store import migrate, native
from colaflow_mcp.store.statements import DECLINED
from colaflow_mcp.store.tables import Meta

logger = logging.getLogger(__name__)
T = TypeVar("T")


def async_url(url: str) -> str:
    """Accept the plain URL forms users have and pick the async driver."""
    try:
        u = make_url(url)
    except ArgumentError:  # a bare path, say (not echoed: it may hold a password)
        raise ValueError("the database URL (COLAFLOW_DATABASE_URL or --database-url) is not a "
                         "URL: use sqlite:///path/to.db or postgresql://user@host:5432/db"
                         ) from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+asyncpg")
        if "sslmode" in u.query:  # libpq's spelling (psql, Heroku-style URLs); asyncpg's is ssl
            if "ssl" not in u.query:
                u = u.update_query_dict({"ssl": u.query["sslmode"]})
            u = u.difference_update_query(["sslmode"])
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return u.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL with any password masked, for logs."""
    return make_url(url).render_as_string(hide_password=True)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database does not answer (refused, reset, closed, timed
    out, no pooled connection free) rather than that a statement failed: a request that
    meets it is answered 503 "try again", not 500."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain is short; a cycle must not loop forever
        if seen is None:
            return False
        if isinstance(seen, BaseExceptionGroup):  # a task group's: every member must be
            return all(unavailable(e) for e in seen.exceptions)
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, PoolTimeout) or native.gone(seen):
            return True
        seen = seen.__cause__ or (seen.orig if isinstance(seen, DBAPIError) else None)
    return False


class Declined(Exception):
    """A statement run by ``Database.run_alone`` declined the work (SQLSTATE ``CF001``):
    it wrote nothing; the caller does it another way."""


class Database:
    """One database, three ways in: ``read()`` and ``write()`` async sessions, and
    ``transact(fn)`` for synchronous transaction functions (the decision path).

    On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers
    (threads or processes) queue on the busy timeout instead of failing on lock upgrade, and
    this process's writers take turns on a lock first: SQLite's busy handler sleeps up to
    100 ms between retries, which under concurrent decisions turned 5 ms writes into
    second-long tails (see benchmarks/RESULTS.md). Write sessions must not nest.
    """

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.sync_write_engine: Engine | None = None
        if self.is_sqlite:
            connect_args: dict[str, Any] = {"timeout": 30}
            self.engine = create_async_engine(self.url, connect_args=connect_args)
            self.write_engine = create_async_engine(self.url, connect_args=connect_args)
            _sqlite_tuning(self.engine.sync_engine, immediate=False)
            _sqlite_tuning(self.write_engine.sync_engine, immediate=True)
            # Transaction functions (``transact``) run on a worker thread over plain sqlite3:
            # one thread hop per transaction instead of about four per statement.
            self.sync_write_engine = create_engine(
                make_url(self.url).set(drivername="sqlite+pysqlite"),
                connect_args={**connect_args, "check_same_thread": False},
                pool_size=2, max_overflow=0,
            )
            _sqlite_tuning(self.sync_write_engine, immediate=True)
            self._write_lock: anyio.Lock | None = anyio.Lock()
            self._sync_limiter = anyio.CapacityLimiter(1)
            # The one connection transaction functions run on (they take turns anyway):
            # no pool checkout, reset and return per transaction.
            self._sync_conn: Connection | None = None
        else:
            # No process-wide lock on PostgreSQL: concurrent transactions wait only on the
            # rows they share. No ping per checkout (a round trip per transaction): a
            # connection found dead is dropped with the rest of the pool, and a transaction
            # function that met it runs once more on a fresh one (see ``transact``).
            # Every statement planned for its own parameters (``plan_cache_mode``): both
            # drivers keep statements prepared per connection, and after five executions
            # PostgreSQL may keep one generic plan for good. Chosen while the tables were
            # small (the first decisions after start), that plan stayed a sequential scan
            # of ``pending_change`` per decision group as the table grew, until the next
            # ANALYZE (never, with autovacuum off): PostgreSQL's CPU per decision grew with
            # the table (benchmarks/RESULTS.md, "Where PostgreSQL's own CPU goes"). Planning
            # the few statements of a group costs ~0.05-0.15 ms each.
            self._write_lock = None
            size = max(1, pool_size)
            self.engine = create_async_engine(
                self.url, pool_size=size, max_overflow=size,
                connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
            self.write_engine = self.engine

    # Sessions are shielded from cancellation: a caller cancelled half-way through a
    # statement (an MCP request whose session closes, a shutdown) would make SQLAlchemy
    # terminate the aiosqlite connection, with a close task that can hang the event loop's
    # close. The bodies are database calls only, so the shield delays a cancellation by
    # one short transaction at most.

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (no commit)."""
        with anyio.CancelScope(shield=True):
            async with AsyncSession(self.engine, expire_on_commit=False) as session:
                yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error."""
        with anyio.CancelScope(shield=True):
            if self._write_lock is None:
                async with AsyncSession(self.write_engine, expire_on_commit=False) as session:
                    async with session.begin():
                        yield session
                return
            async with self._write_lock:
                async with AsyncSession(self.write_engine, expire_on_commit=False) as session:
                    async with session.begin():
                        yield session

    async def transact(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one write transaction: committed if it returns, rolled
        back if it raises.

        ``fn`` is synchronous. On SQLite it runs on a worker thread over sqlite3 (the event
        loop never blocks; the whole transaction costs one thread hop); on PostgreSQL it
        runs through ``AsyncSession.run_sync`` over asyncpg. On SQLite a started
        transaction is not abandoned: it finishes (or rolls back) before the caller's
        cancellation takes effect.
        """
        if self.sync_write_engine is None:
            return await self._transact_async(fn)
        engine = self.sync_write_engine

        def run() -> T:
            conn = self._sync_conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._sync_conn = engine.connect()
            try:
                with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                    return fn(session)
            except BaseException:
                # Whatever state a failure left it in, the next transaction starts on a
                # fresh checkout (closing rolls back and returns it to the pool).
                self._sync_conn = None
                conn.close()
                raise

        assert self._write_lock is not None
        async with self._write_lock:
            return await anyio.to_thread.run_sync(run, limiter=self._sync_limiter)

    async def _transact_async(self, fn: Callable[[Session], T]) -> T:
        for attempt in (1, 2):
            async with AsyncSession(self.write_engine, expire_on_commit=False) as session:
                transaction = await session.begin()
                try:
                    # sqlmodel's AsyncSession runs ``fn`` with its own (sqlmodel) Session.
                    value = await session.run_sync(lambda sync: fn(cast(Session, sync)))
                except DBAPIError as exc:
                    await transaction.rollback()
                    # A pooled connection that died (database restarted): nothing was
                    # committed, so run once more on a fresh one.
                    if attempt == 1 and exc.connection_invalidated:
                        logger.warning("database connection lost; running the transaction "
                                       "again on a new one")
                        continue
                    raise
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
                return value
        raise AssertionError("unreachable")

    async def run_alone(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one statement sent on a pooled connection's asyncpg connection
        itself, outside any explicit transaction (PostgreSQL): the statement is its own
        transaction, committed by the server as it ends, so the whole call is one round
        trip (no BEGIN, no COMMIT). A statement that raises SQLSTATE ``CF001`` raises
        :class:`Declined` (it wrote nothing); a connection found dead is dropped from the
        pool and the driver's error raised.
        """
        if self.is_sqlite:
            raise RuntimeError("run_alone is for PostgreSQL")
        async with self.engine.connect() as conn:
            raw: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            try:
                rows: list[Any] = await raw.fetch(sql, *args)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) == DECLINED:
                    raise Declined(str(exc)) from None
                if native.gone(exc) or raw.is_closed():
                    await conn.invalidate(exc)
                raise
            return rows

    async def create_schema(self, mode: str = "auto", lock_timeout: float = 600.0) -> None:
        """Bring the schema to the latest revision (``auto``) or refuse an older one
        (``check``); several processes at once take turns (see store/migrate.py)."""
        await migrate.ensure(self.url, mode, lock_timeout)

    async def ping(self, quiet: bool = False) -> bool:
        """True if the database answers (``quiet``: a failure is logged without its
        traceback: readiness probes ask every few seconds)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            if quiet:
                logger.warning("database ping failed: %s", type(exc).__name__)
            else:
                logger.warning("database ping failed", exc_info=True)
            return False

    async def meta_get_or_create(self, key: str, make: Any = None) -> str:
        """A stored fact, created (once, race-safe) by ``make()`` if absent."""
        async with self.read() as s:
            row = await s.get(Meta, key)
            if row is not None:
                return row.value
        value = make() if make is not None else secrets.token_urlsafe(48)
        try:
            async with self.write() as s:
                s.add(Meta(key=key, value=value))
        except IntegrityError:
            pass
        async with self.read() as s:
            row = await s.get(Meta, key)
            assert row is not None
            return row.value

    async def dispose(self) -> None:
        """Close every connection (the last call on a Database)."""
        if self.sync_write_engine is not None:
            if self._sync_conn is not None:
                self._sync_conn.close()
                self._sync_conn = None
            self.sync_write_engine.dispose()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def _sqlite_tuning(sync_engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        if isinstance(driver, sqlite3.Connection):
            # sqlite3 itself (the transaction functions' engine): SQLAlchemy's execution
            # context around one fixed statement cost more than SQLite's BEGIN.
            driver.execute(begin)
        else:  # aiosqlite: through the adapter, which awaits it
            conn.exec_driver_sql(begin)
