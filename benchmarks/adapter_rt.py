"""Wall time of a short PostgreSQL transaction: ``Database.transact`` against asyncpg alone.

``python -m benchmarks.adapter_rt [--url URL] [--count 300]``: transactions of 1 and of 5
``SELECT 1`` statements on one connection, through the decision path's
``Database.transact`` (SQLAlchemy's asyncpg adapter, ``run_sync``) and through asyncpg
with a prepared statement, alternating; prints ms per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlmodel import Session

from colaflow_mcp.store.engine import Database


def _statements(n: int) -> Callable[[Session], None]:
    def fn(s: Session) -> None:
        for _ in range(n):
            s.connection().execute(text("SELECT 1"))
    return fn


async def run(url: str, count: int) -> None:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    db = Database(url)
    conn = await asyncpg.connect(url)
    try:
        stmt = await conn.prepare("SELECT 1")
        for rep in range(2):
            for n in (1, 5):
                fn = _statements(n)
                for _ in range(30):
                    await db.transact(fn)
                t0 = time.perf_counter()
                for _ in range(count):
                    await db.transact(fn)
                ours = (time.perf_counter() - t0) * 1000 / count
                t0 = time.perf_counter()
                for _ in range(count):
                    async with conn.transaction():
                        for _ in range(n):
                            await stmt.fetch()
                raw = (time.perf_counter() - t0) * 1000 / count
                print(f"round {rep + 1}, {n} statement(s): Database.transact {ours:.3f} ms, "
                      f"asyncpg {raw:.3f} ms per transaction")
    finally:
        await conn.close()
        await db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapter_rt", description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
