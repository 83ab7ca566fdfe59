"""CPU per proposal in-process (``ChangeService.propose``, the server's recorders), with 1
and with N proposers of one tenant at once: the proposal's cost without HTTP and MCP.

``python -m benchmarks.propose_micro [--concurrency 1,8] [--blocks N] [--size B]
[--postgres-url URL]``. To compare two versions of the package, put a copy of each first
on ``PYTHONPATH`` and run this once per copy, alternating. Prints JSON: per concurrency,
the median and the best block's CPU and wall ms per proposal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import colaflow_mcp
from benchmarks.audit_micro import _drop_pg, _pg, micro_principals
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import MemoryBackplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.domain import audit
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.webhooks import WebhookRecorder
from colaflow_mcp.store.engine import Database


async def _block(changes: ChangeService, agent: Principal, size: int, concurrency: int
                 ) -> dict[str, float]:
    """``size`` proposals, made by ``concurrency`` callers at once."""
    each = size // concurrency

    async def caller(n: int) -> None:
        for i in range(each):
            await changes.propose(agent, "create_issue", {
                "project_key": "WEB", "title": f"micro {n} {i}",
                "description": "Made by the proposal micro-benchmark."})

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(concurrency):
            tg.start_soon(caller, n)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = each * concurrency
    return {"cpu_ms": cpu * 1000 / done, "wall_ms": wall * 1000 / done}


async def run(url: str, levels: list[int], blocks: int, size: int) -> dict[str, Any]:
    db = Database(url)
    await db.create_schema()
    try:
        agent, _ = await micro_principals(db)
        settings = Settings(database_url=url)
        # The server's recorders (runtime.py): webhook deliveries (none configured here:
        # one lookup of the tenant's endpoints) and the audit trail.
        changes = ChangeService(db, Outbox(db, Notifier(db), MemoryBackplane()), settings,
                                recorders=(WebhookRecorder(), audit.record))
        for level in levels:
            await _block(changes, agent, size, level)  # warm-up
        runs: dict[int, list[dict[str, float]]] = {level: [] for level in levels}
        for i in range(blocks):
            for level in levels if i % 2 == 0 else list(reversed(levels)):
                runs[level].append(await _block(changes, agent, size, level))
    finally:
        await db.dispose()
    out: dict[str, Any] = {"package": str(Path(colaflow_mcp.__file__).parent),
                           "database": url.split(":", 1)[0], "blocks": blocks, "size": size}
    for level, got in runs.items():
        out[f"concurrency_{level}"] = {
            name: {k: round(pick(b[k] for b in got), 4) for k in got[0]}
            for name, pick in (("median", statistics.median), ("best", min))}
    out["loadavg"] = os.getloadavg()
    return out


async def main_async(args: argparse.Namespace) -> None:
    levels = [int(x) for x in args.concurrency.split(",")]
    if args.postgres_url:
        name, url = await _pg(args.postgres_url)
        try:
            result = await run(url, levels, args.blocks, args.size)
        finally:
            await _drop_pg(args.postgres_url, name)
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'micro.sqlite'}"
        result = await run(url, levels, args.blocks, args.size)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8", help="proposers at once, per level")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per level")
    parser.add_argument("--size", type=int, default=400, help="proposals per block")
    parser.add_argument("--postgres-url", help="an admin URL: run on a fresh PostgreSQL "
                        "database (created and dropped)")
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
