"""PostgreSQL statements sent on the driver itself from inside a transaction function.

A transaction function (``Database.transact``) runs synchronously, on PostgreSQL on a
worker thread over psycopg. Each statement it executes through SQLAlchemy pays the
statement's compilation lookup, parameter and result processing, several times the
driver's own cost per round trip (benchmarks/RESULTS.md, ``adapter_rt``). The decision
path's few hot statements are sent instead on the same connection, in the same
transaction, prepared on the server once per connection: :func:`native` gives the way in
on PostgreSQL, None on SQLite, where callers use their Core statement.

Parameters are positional (``$1``: psycopg's raw cursor); JSON goes in as text and comes
out decoded. Rows read by name or by position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from psycopg import Connection as PgConnection
from psycopg import Cursor, RawCursor
from psycopg import Error as PgError
from psycopg.rows import RowMaker
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


class Record:
    """One row: ``row["name"]``, ``row[0]``, ``row.items()``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def items(self) -> Iterator[tuple[str, Any]]:
        return zip(self._names, self._values, strict=True)


def _records(cursor: Cursor[Any]) -> RowMaker[Record]:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: Record(names, values)


class Native:
    """The psycopg connection under a transaction function's connection."""

    def __init__(self, conn: Connection, raw: PgConnection[Any]) -> None:
        self._conn = conn
        self._raw = raw

    def fetch(self, sql: str, *args: Any) -> list[Record]:
        """The rows of one statement."""
        try:
            with RawCursor(self._raw, row_factory=_records) as cur:
                cur.execute(sql, args, prepare=True)
                return cur.fetchall()
        except PgError as exc:
            raise self._failed(sql, exc) from exc

    def execute(self, sql: str, *args: Any) -> None:
        """Run one statement for its effect."""
        try:
            with RawCursor(self._raw) as cur:
                cur.execute(sql, args, prepare=True)
        except PgError as exc:
            raise self._failed(sql, exc) from exc

    def _failed(self, sql: str, exc: PgError) -> BaseException:
        # A connection that is gone (the database restarted, the socket closed) is
        # reported as SQLAlchemy reports its own statements' (the connection invalidated),
        # so ``Database.transact`` runs the transaction once more on a fresh one. Other
        # errors (a constraint, a deadlock) go up as psycopg raised them.
        if not (self._raw.closed or self._raw.broken):
            return exc
        self._conn.invalidate(exc)
        return DBAPIError(sql, None, exc, connection_invalidated=True)


def native(conn: Connection) -> Native | None:
    """The psycopg connection under ``conn`` (PostgreSQL, in ``Database.transact``), in
    ``conn``'s transaction; None on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    raw: Any = conn.connection.driver_connection
    if not isinstance(raw, PgConnection):
        raise RuntimeError("native statements run inside Database.transact only")
    if raw.autocommit:  # nothing here may run outside a transaction
        raise RuntimeError("native statements need a transaction")
    return Native(conn, raw)


def available(conn: Connection) -> bool:
    """Whether :func:`native` gives statements on ``conn`` (PostgreSQL, in
    ``Database.transact``), for callers that also run in async sessions."""
    return isinstance(conn.connection.driver_connection, PgConnection)
