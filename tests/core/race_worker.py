"""Run N concurrent decision attempts on one change from a separate process.

Usage: python -m tests.core.race_worker DATABASE_URL CHANGE_ID TENANT_ID TENANT_SLUG N
Prints ``ready`` once set up, waits for a line on stdin (the start signal, so that two
workers start together), then prints one JSON object: {"won": [...], "conflicts": {...}}.
Every other approval edits the change (its title names the process and the attempt).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import MemoryBackplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.errors import Conflict
from colaflow_mcp.store.engine import Database


async def main(url: str, change_id: str, tenant_id: str, slug: str, n: int
               ) -> dict[str, Any]:
    db = Database(url)
    notifier = Notifier(db)
    changes = ChangeService(db, Outbox(db, notifier, MemoryBackplane()),
                            Settings(database_url=url))
    reviewer = Principal(kind="reviewer", tenant_id=tenant_id, tenant_slug=slug, user="racer")
    won: list[str] = []
    conflicts: dict[str, int] = {}

    async def attempt(i: int) -> None:
        try:
            if i % 3 == 0:
                edit = ({"project_key": "WEB", "title": f"edited by {os.getpid()}.{i}"}
                        if i % 6 == 0 else None)
                await changes.approve(reviewer, change_id, edit)
                won.append("Approved")
            elif i % 3 == 1:
                await changes.reject(reviewer, change_id, f"racer {i}")
                won.append("Rejected")
            else:
                won.extend(c.status for c in await changes.expire_due())
        except Conflict as exc:
            conflicts[exc.status] = conflicts.get(exc.status, 0) + 1

    await db.ping()  # connected and warm
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(attempt, i)
    await db.dispose()
    return {"won": won, "conflicts": conflicts}


if __name__ == "__main__":
    url, cid, tid, slug, n = sys.argv[1:6]
    print(json.dumps(anyio.run(main, url, cid, tid, slug, int(n))), flush=True)
