"""CPU per ``Database.transact`` call on SQLite, in-process: the floor under a decision.

``python -m benchmarks.transact_micro [--transactions N]``. To compare two versions of the
package, put a copy of each first on ``PYTHONPATH`` and run this once per copy, alternating.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from sqlalchemy import text
from sqlmodel import Session

import colaflow_mcp
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import Tenant

UPDATE = text("UPDATE tenant SET name = :name WHERE slug = 'bench'")


def _add(s: Session) -> None:
    s.add(Tenant(slug="bench", name="bench"))


def _update(s: Session) -> None:
    s.connection().execute(UPDATE, {"name": "x"})


async def run(transactions: int) -> None:
    db = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'micro.sqlite'}")
    await db.create_schema()
    try:
        await db.transact(_add)
        for _ in range(500):  # warm-up
            await db.transact(_update)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(transactions):
            await db.transact(_update)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await db.dispose()
    print(f"{Path(colaflow_mcp.__file__).parent}: CPU {1000 * cpu / transactions:.3f} ms, "
          f"wall {1000 * wall / transactions:.3f} ms per transaction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=5000)
    anyio.run(run, parser.parse_args().transactions)


if __name__ == "__main__":
    main()
