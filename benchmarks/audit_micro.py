"""CPU and wall time per proposal and per decision in-process, with and without the audit
entry: the audit chain's own cost without HTTP and the server around it.

``python -m benchmarks.audit_micro [--blocks N] [--size B] [--postgres-url URL]``.
Alternates blocks with the audit recorder on and off (``ChangeService.recorders``, as the
``audit-off`` instrument does) so that machine load falls on both alike; prints medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import MemoryBackplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.domain import admin, audit
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.store.engine import Database


async def _block(changes: ChangeService, agent: Principal, reviewer: Principal, size: int
                 ) -> dict[str, float]:
    """``size`` proposals, then ``size`` decisions (every other approves and executes)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ids = [(await changes.propose(agent, "create_issue",
                                  {"project_key": "WEB", "title": f"micro {i}"})).id
           for i in range(size)]
    cpu1, wall1 = time.process_time(), time.perf_counter()
    for i, cid in enumerate(ids):
        if i % 2 == 0:
            await changes.approve(reviewer, cid)
        else:
            await changes.reject(reviewer, cid, "micro")
    cpu2, wall2 = time.process_time(), time.perf_counter()
    return {"propose_cpu_ms": (cpu1 - cpu0) * 1000 / size,
            "propose_wall_ms": (wall1 - wall0) * 1000 / size,
            "decide_cpu_ms": (cpu2 - cpu1) * 1000 / size,
            "decide_wall_ms": (wall2 - wall1) * 1000 / size}


async def micro_principals(db: Database) -> tuple[Principal, Principal]:
    """The micro benchmarks' tenant ``micro`` with project WEB: its agent (an API key) and
    a reviewer."""
    tenant = await admin.get_or_create_tenant(db, "micro")
    await admin.create_project_direct(db, tenant.id, "WEB", "Website")
    row, _ = await admin.create_api_key(db, tenant, "micro")
    agent = Principal(kind="agent", tenant_id=tenant.id, tenant_slug=tenant.slug,
                      api_key_id=row.id, key_name="micro")
    reviewer = Principal(kind="reviewer", tenant_id=tenant.id, tenant_slug=tenant.slug,
                         user="rita")
    return agent, reviewer


async def run(url: str, blocks: int, size: int) -> dict[str, Any]:
    db = Database(url)
    await db.create_schema()
    try:
        agent, reviewer = await micro_principals(db)
        changes = ChangeService(db, Outbox(db, Notifier(db), MemoryBackplane()),
                                Settings(database_url=url))
        await _block(changes, agent, reviewer, size)  # warm-up
        legs: dict[str, list[dict[str, float]]] = {"audit-on": [], "audit-off": []}
        for i in range(blocks):
            order = ["audit-on", "audit-off"] if i % 2 == 0 else ["audit-off", "audit-on"]
            for leg in order:
                changes.recorders = (audit.record,) if leg == "audit-on" else ()
                legs[leg].append(await _block(changes, agent, reviewer, size))
    finally:
        await db.dispose()
    # The median block, and the best one: other work on the machine only ever adds time,
    # so the fastest block of each leg is the closest to what the code itself costs.
    out: dict[str, Any] = {"database": url.split(":", 1)[0], "blocks": blocks, "size": size}
    for name, pick in (("median", statistics.median), ("best", min)):
        per_leg = {leg: {k: round(pick(b[k] for b in runs), 4) for k in runs[0]}
                   for leg, runs in legs.items()}
        out[name] = per_leg
        out[f"difference_{name}"] = {
            k: round(per_leg["audit-on"][k] - per_leg["audit-off"][k], 4)
            for k in per_leg["audit-on"]}
    out["loadavg"] = os.getloadavg()
    return out


async def _pg(admin_url: str) -> tuple[str, str]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]
    from sqlalchemy.engine import make_url

    name = f"cola_bench_{uuid.uuid4().hex[:8]}"
    u = make_url(admin_url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 database=u.database)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


async def _drop_pg(admin_url: str, name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(admin_url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 database=u.database)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> None:
    if args.postgres_url:
        name, url = await _pg(args.postgres_url)
        try:
            result = await run(url, args.blocks, args.size)
        finally:
            await _drop_pg(args.postgres_url, name)
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'micro.sqlite'}"
        result = await run(url, args.blocks, args.size)
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10, help="blocks per leg")
    parser.add_argument("--size", type=int, default=200, help="proposals (and decisions) "
                        "per block")
    parser.add_argument("--postgres-url", help="an admin URL: run on a fresh PostgreSQL "
                        "database (created and dropped)")
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
