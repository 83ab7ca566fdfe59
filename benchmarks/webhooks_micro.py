"""The webhook sender alone: CPU and database round trips per delivery, in process.

``python -m benchmarks.webhooks_micro [--deliveries 3000] [--endpoints 10]
[--postgres-url URL] [--profile FILE]``

A fresh database (SQLite file, or a throwaway PostgreSQL database with ``--postgres-url``,
an admin URL) holds ``--deliveries`` pending deliveries spread over ``--endpoints``
endpoints of one tenant, each with a realistic body (an approved change, ~1 KB). The receiver is the
webhooks benchmark's own process (keep-alive HTTP/1.1, 204). One
:class:`~colaflow_mcp.delivery.webhooks.WebhookSender` with production settings (private
networks allowed) sends them all; the result is this process's CPU time (all threads,
``time.process_time``) per delivery, the wall time, and the SQL statements executed per
delivery (counted by an engine event). ``--profile`` writes a cProfile of the sending.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import event

from benchmarks.scenarios import _pg_admin, create_pg_database
from benchmarks.webhooks import start_receiver
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.webhooks import WebhookSender
from colaflow_mcp.domain import admin, webhooks
from colaflow_mcp.store import statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import utcnow


def body(i: int) -> str:
    """An approved change's event, shaped like the real one."""
    return json.dumps({"type": "pending_change.approved", "timestamp": "2026-11-30T06:00:00Z",
                       "data": {"pendingChangeId": str(uuid.uuid4()), "tool": "create_issue",
                                "status": "executed", "summary": f"Create issue #{i}",
                                "arguments": {"title": f"Issue {i}", "body": "x" * 300,
                                              "labels": ["bug", "p2"]},
                                "proposedArguments": {"title": f"Issue {i}",
                                                      "body": "x" * 300},
                                "result": {"issueId": str(uuid.uuid4())},
                                "decidedBy": "reviewer@example.com"}},
                      separators=(",", ":"))


async def run(url: str, deliveries: int, endpoint_count: int, port: int,
              profile: Path | None) -> dict[str, Any]:
    db = Database(url)
    await db.create_schema()
    tenant = await admin.get_or_create_tenant(db, "bench")
    eps = [await webhooks.add_endpoint(db, tenant, f"http://127.0.0.1:{port}/micro/e{i}",
                                       None, allow_private=True)
           for i in range(endpoint_count)]
    now = utcnow()
    rows = [{"id": webhooks.new_delivery_id(), "endpoint_id": eps[i % endpoint_count].id,
             "tenant_id": tenant.id, "event_type": "pending_change.approved",
             "change_id": None, "body": body(i), "state": "pending", "attempts": 0,
             "created_at": now, "next_attempt_at": now} for i in range(deliveries)]
    await db.transact(lambda s: s.connection().execute(
        statements.INSERT_WEBHOOK_DELIVERY, rows))

    statements_run = [0]

    def count(*_: Any) -> None:
        statements_run[0] += 1

    engines = [db.engine.sync_engine, db.write_engine.sync_engine]
    if db.sync_write_engine is not None:
        engines.append(db.sync_write_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)

    settings = Settings(database_url=url, jwt_secret="micro",
                        webhook_allow_private_networks=True)
    sender = WebhookSender(db, settings)
    stopping = anyio.Event()

    async def pause(seconds: float, wake: anyio.Event) -> None:
        with anyio.move_on_after(seconds):
            await wake.wait()

    prof = cProfile.Profile() if profile else None
    cpu0, t0 = time.process_time(), time.monotonic()
    if prof:
        prof.enable()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender.run, stopping, pause)
        with anyio.fail_after(600):
            while sender.results["succeeded"] + sender.results["failed"] < deliveries:
                await sender.attempt_recorded.wait()
        stopping.set()
        sender.nudge()
    if prof:
        prof.disable()
        prof.dump_stats(str(profile))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    await db.dispose()
    return {"deliveries": deliveries, "endpoints": endpoint_count,
            "engine": "postgresql" if url.startswith("postgresql") else "sqlite",
            "results": dict(sender.results), "wall_s": round(wall, 2),
            "deliveries_per_s": round(deliveries / wall, 1),
            "cpu_ms_per_delivery": round(1000 * cpu / deliveries, 3),
            "sql_statements_per_delivery": round(statements_run[0] / deliveries, 3)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    receiver = await start_receiver()
    try:
        if args.postgres_url:
            url, name = await create_pg_database(args.postgres_url)
            try:
                return await run(url, args.deliveries, args.endpoints, receiver.port,
                                 args.profile)
            finally:
                await _pg_admin(args.postgres_url,
                                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with tempfile.TemporaryDirectory(prefix="colaflow-whmicro-") as tmp:
            return await run(f"sqlite:///{tmp}/micro.db", args.deliveries, args.endpoints,
                             receiver.port, args.profile)
    finally:
        assert receiver.proc.stdin is not None
        receiver.proc.stdin.close()
        await receiver.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhooks_micro",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--postgres-url", help="a PostgreSQL admin URL (else SQLite)")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    result = asyncio.run(main_async(args))
    result["loadavg_before"] = [round(x, 2) for x in load]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
