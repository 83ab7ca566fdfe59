"""Approvals in-process (no HTTP, nobody subscribed): the decision path's floor.

``python -m benchmarks.decide_micro [--postgres-url URL] [--approvals 2000] [--inflight 8]``:
the change service alone approves ``--approvals`` ``create_issue`` changes with
``--inflight`` at a time; prints approvals/s, CPU per approval (this process, worker
threads included; on PostgreSQL the database server's own work is not in it), database
round trips per approval (statements, BEGIN and COMMIT, counted by SQLAlchemy events, and
statements sent on asyncpg itself, ``store/native.py`` and ``Database.run_alone``),
and how the decisions were grouped into transactions (store/groups.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from sqlalchemy import event

from benchmarks.audit_micro import _pg, micro_principals
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import MemoryBackplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.store.engine import Database


class _NoGroups:
    transactions = members = retried = 0


async def run(url: str, approvals: int, inflight: int) -> dict[str, Any]:
    db = Database(url)
    await db.create_schema()
    counts = {"statements": 0, "native": 0, "begin": 0, "commit": 0}
    alone_s: list[float] = []  # wall time of each run_alone call (its round trip)
    engine = db.sync_write_engine or db.write_engine.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _stmt(*_: Any) -> None:
        counts["statements"] += 1

    @event.listens_for(engine, "begin")
    def _begin(*_: Any) -> None:
        counts["begin"] += 1

    @event.listens_for(engine, "commit")
    def _commit(*_: Any) -> None:
        counts["commit"] += 1

    try:  # statements sent on asyncpg itself (PostgreSQL) pass no SQLAlchemy event
        from colaflow_mcp.store.native import Native
    except ImportError:  # a checkout from before store/native.py
        Native = None  # type: ignore[assignment,misc]  # noqa: N806
    if Native is not None:
        run_native = Native._run

        def _counted(self: Any, *args: Any) -> Any:
            counts["native"] += 1
            return run_native(self, *args)

        Native._run = _counted  # type: ignore[method-assign]
    run_alone = getattr(Database, "run_alone", None)  # a group in one statement (decide_one)
    if run_alone is not None:
        async def _alone(self: Any, *args: Any) -> Any:
            counts["native"] += 1
            t = time.perf_counter()
            try:
                return await run_alone(self, *args)
            finally:
                alone_s.append(time.perf_counter() - t)

        Database.run_alone = _alone  # type: ignore[method-assign,assignment]

    try:
        agent, reviewer = await micro_principals(db)
        changes = ChangeService(db, Outbox(db, Notifier(db), MemoryBackplane()),
                                Settings(database_url=url))
        ids = [(await changes.propose(agent, "create_issue",
                                      {"project_key": "WEB", "title": f"t{i}"})).id
               for i in range(approvals + 100)]
        for cid in ids[:100]:  # warm-up
            await changes.approve(reviewer, cid)
        todo = iter(ids[100:])
        # (getattr: the same script measures a checkout from before group commit too.)
        groups: Any = getattr(changes, "decisions", None) or _NoGroups()
        before = (dict(counts), groups.transactions, groups.members, groups.retried,
                  getattr(groups, "firsts", 0))

        async def lane() -> None:
            for cid in todo:
                await changes.approve(reviewer, cid)

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await db.dispose()
    n = approvals
    return {"database": url.split(":", 1)[0], "approvals": n, "inflight": inflight,
            "per_s": round(n / wall, 1), "cpu_ms_per_approval": round(cpu * 1000 / n, 3),
            "round_trips_per_approval": {k: round((counts[k] - before[0][k]) / n, 2)
                                         for k in counts},
            "transactions": groups.transactions - before[1],
            "mean_group": round((groups.members - before[2])
                                / max(1, groups.transactions - before[1]), 2),
            "groups_retried": groups.retried - before[3],
            "one_statement_groups": getattr(groups, "firsts", 0) - before[4],
            "one_statement_ms": round(1000 * sum(alone_s[-100:]) / max(1, len(alone_s[-100:])),
                                      3),
            "loadavg": os.getloadavg()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.postgres_url:
        name, url = await _pg(args.postgres_url)
        try:
            return await run(url, args.approvals, args.inflight)
        finally:
            import asyncpg  # type: ignore[import-untyped,unused-ignore]

            conn = await asyncpg.connect(args.postgres_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return await run(f"sqlite:///{tmp}/micro.db", args.approvals, args.inflight)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decide_micro",
                                     description=__doc__)
    parser.add_argument("--postgres-url")
    parser.add_argument("--approvals", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
