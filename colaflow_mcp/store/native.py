"""PostgreSQL statements sent on asyncpg itself from inside a transaction function.

A transaction function (``Database.transact``) runs synchronously; on PostgreSQL each
statement it executes through SQLAlchemy goes through the asyncpg adapter, a greenlet
hand-off, parameter and result processing: several times the driver's own cost per round
trip (benchmarks/RESULTS.md, ``adapter_rt``). The decision path's few hot statements are
sent instead on the same connection, in the same transaction, with asyncpg's own prepared
statement cache: :func:`native` gives the way in on PostgreSQL, None on SQLite, where
callers use their Core statement.

Parameters are positional (``$1``); JSON goes in as text (SQLAlchemy's codec on the
connection encodes ``str``) and comes out decoded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

# Errors that mean the connection is gone (the database restarted, the socket closed):
# reported as SQLAlchemy's, the connection invalidated, so ``Database.transact`` runs the
# transaction once more on a fresh one, as it does for its own statements.
_GONE = ("ConnectionDoesNotExistError", "PostgresConnectionError")


def gone(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) or "connection is closed" in str(exc)
            or any(cls.__name__ in _GONE for cls in type(exc).__mro__))


def _closed(conn: Connection) -> bool:
    """Whether the driver's connection is closed: after a failure, the failure was the
    connection's (asyncpg can report a socket the server closed as an internal error
    before it has noticed the close itself)."""
    try:
        raw: Any = conn.connection.driver_connection
        return raw is not None and bool(raw.is_closed())
    except Exception:
        return False


def _guarded(conn: Connection, what: str, awaitable: Any) -> Any:
    try:
        return await_only(awaitable)
    except Exception as exc:
        if not (gone(exc) or _closed(conn)):
            raise
        conn.invalidate(exc)
        raise DBAPIError(what, None, exc, connection_invalidated=True) from exc


class Native:
    """The asyncpg connection under a transaction function's connection."""

    def __init__(self, conn: Connection, raw: Any) -> None:
        self._conn = conn
        self._raw = raw

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one statement (asyncpg ``Record``s: by name or position)."""
        rows: list[Any] = self._run(sql, self._raw.fetch, args)
        return rows

    def execute(self, sql: str, *args: Any) -> None:
        """Run one statement for its effect."""
        self._run(sql, self._raw.execute, args)

    def _run(self, sql: str, method: Any, args: tuple[Any, ...]) -> Any:
        return _guarded(self._conn, sql, method(sql, *args))


def native(conn: Connection) -> Native | None:
    """The asyncpg connection under ``conn`` (PostgreSQL, in ``Database.transact``), its
    transaction begun; None on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    if not in_greenlet():
        raise RuntimeError("native statements run inside Database.transact only")
    adapter: Any = conn.connection.dbapi_connection
    raw: Any = conn.connection.driver_connection
    if not raw.is_in_transaction():
        # SQLAlchemy's adapter sends BEGIN with its first statement; none has run yet.
        _guarded(conn, "BEGIN", adapter._start_transaction())
        if not raw.is_in_transaction():  # autocommit: nothing here may run outside one
            raise RuntimeError("native statements need a transaction")
    return Native(conn, raw)
