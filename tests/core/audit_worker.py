"""Propose and decide changes in two tenants at once from a separate process (instance).

Usage: python -m tests.core.audit_worker DATABASE_URL N TENANT_ID:SLUG:KEY_ID ...
Prints ``ready`` once connected, waits for a line on stdin (so that two workers start
together), then runs N concurrent proposal-then-decision tasks per tenant and prints one
JSON object: {tenant_id: {"proposed": n, "approved": n, "rejected": n}}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import MemoryBackplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.store.engine import Database


async def main(url: str, n: int, tenants: list[str]) -> dict[str, Any]:
    db = Database(url)
    changes = ChangeService(db, Outbox(db, Notifier(db), MemoryBackplane()),
                            Settings(database_url=url))
    counts: dict[str, dict[str, int]] = {}

    async def one(tenant_id: str, slug: str, key_id: str, i: int) -> None:
        agent = Principal(kind="agent", tenant_id=tenant_id, tenant_slug=slug,
                          api_key_id=key_id, key_name="worker")
        reviewer = Principal(kind="reviewer", tenant_id=tenant_id, tenant_slug=slug,
                             user="racer")
        change = await changes.propose(agent, "create_issue",
                                       {"project_key": "WEB", "title": f"task {i}"})
        if i % 2:
            await changes.approve(reviewer, change.id)
            outcome = "approved"
        else:
            await changes.reject(reviewer, change.id, f"no {i}")
            outcome = "rejected"
        c = counts.setdefault(tenant_id, {"proposed": 0, "approved": 0, "rejected": 0})
        c["proposed"] += 1
        c[outcome] += 1

    await db.ping()
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    async with anyio.create_task_group() as tg:
        for i in range(n):
            for spec in tenants:
                tenant_id, slug, key_id = spec.split(":")
                tg.start_soon(one, tenant_id, slug, key_id, i)
    await db.dispose()
    return counts


if __name__ == "__main__":
    url, n, *tenants = sys.argv[1:]
    print(json.dumps(anyio.run(main, url, int(n), tenants)), flush=True)
