"""Prebuilt statements on SQLite's own cursor: compiled once, bound by SQLAlchemy's types.

``Connection.execute`` of a prebuilt Core statement still costs more than SQLite takes to
run it (an execution context, parameter processing, a result object: about 0.1 ms a
statement, a proposal runs six; see benchmarks/RESULTS.md). :func:`run` compiles a
statement once per parameter set (its SQL text and the order of its parameters) and runs
it on the sqlite3 cursor of the caller's connection, in the caller's transaction. Each
value goes through the bind processor of its column's type and each returned column
through its result processor, so what is written and read is what ``Connection.execute``
would write and read (JSON, datetimes); rows are tuples.

On any other driver (asyncpg, and aiosqlite under an ``AsyncSession``'s ``run_sync``:
their own cursors are awaited) it is ``Connection.execute``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

_MISSING = object()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per positional parameter: its name, its value when the statement holds one (a
    # literal), and its type's bind processor.
    binds: tuple[tuple[str, Any, Any], ...]
    # Per returned column, its type's result processor (None: every one is None).
    results: tuple[Any, ...] | None

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, fixed, process in self.binds:
            value = params[name] if fixed is _MISSING else fixed
            out.append(value if process is None or value is None else process(value))
        return tuple(out)

    def rows(self, raw: list[Any]) -> list[Any]:
        if self.results is None:
            return raw
        return [tuple(v if p is None or v is None else p(v)
                      for p, v in zip(self.results, row, strict=True)) for row in raw]


_cache: dict[tuple[int, frozenset[str], str], tuple[Any, _Compiled]] = {}


def _compiled(statement: Any, keys: frozenset[str], dialect: Dialect) -> _Compiled:
    key = (id(statement), keys, dialect.name)
    found = _cache.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiler = statement.compile(dialect=dialect, column_keys=sorted(keys))
    assert isinstance(compiler, SQLCompiler) and compiler.positiontup is not None
    binds = []
    for name in compiler.positiontup:
        bind = compiler.binds[name]
        fixed = _MISSING if name in keys else bind.effective_value
        if fixed is None and name not in keys:
            # A parameter neither given nor fixed (a column default Core would compute):
            # not for this path.
            raise ValueError(f"parameter {name!r} of a prepared statement has no value")
        impl = bind.type.dialect_impl(dialect)
        binds.append((name, fixed, impl.bind_processor(dialect)))
    columns = getattr(statement, "exported_columns", ())
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                    for c in columns)
    made = _Compiled(compiler.string, tuple(binds),
                     results if any(p is not None for p in results) else None)
    _cache[key] = (statement, made)  # the statement is kept: its id stays its own
    return made


def run(conn: Connection, statement: Any,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Any]:
    """Run a prebuilt statement in ``conn``'s transaction with one parameter set or
    several (executemany); the rows it returns, all read (an empty list if none)."""
    # The DBAPI connection under the caller's transaction (already begun by SQLAlchemy:
    # ``Session.connection()`` ran our BEGIN IMMEDIATE).
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):  # asyncpg, aiosqlite: awaited cursors
        result = conn.execute(statement, params)
        return list(result.all()) if result.returns_rows else []
    if not isinstance(params, Mapping) and not params:
        return []
    first = params if isinstance(params, Mapping) else params[0]
    compiled = _compiled(statement, frozenset(first), conn.dialect)
    cursor = driver.cursor()
    try:
        if not isinstance(params, Mapping):
            cursor.executemany(compiled.sql, [compiled.values(p) for p in params])
            return []
        cursor.execute(compiled.sql, compiled.values(params))
        return compiled.rows(cursor.fetchall())  # every row read: the statement is done
    finally:
        cursor.close()


__all__ = ["run"]
