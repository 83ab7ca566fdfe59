"""Memory per idle MCP session: legacy sessions and modern listen streams, RSS per client.

``python -m benchmarks mcp-memory [--sizes 1000,10000] [--eras legacy,modern]``: for each
era and size, a fresh ``colaflow-mcp serve``; N official-SDK clients (in worker processes)
each watch one pending change — legacy: ``initialize``, the GET stream,
``resources/subscribe``; modern: one ``subscriptions/listen`` stream — and then sit idle.
The server's RSS before they connect and 2 s after the last one is ready, divided by N; and
whether every client got in (the 10,000-session target). ``BENCH_INSTRUMENT=tracemalloc``
writes the Python allocations' growth by file into the server's log (printed at the end).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import start_workers, stop_workers
from benchmarks.scenarios import _progress, _tracemalloc_mark, _workers_for, warm_up
from benchmarks.server import running_server, seed_changes


async def mcp_memory(root: Path, smoke: bool = False, sizes: list[int] | None = None,
                     eras: list[str] | None = None) -> dict[str, Any]:
    """RSS per idle MCP client, both eras."""
    sizes = [3] if smoke else (sizes or [1000])
    runs = []
    for era in eras or ["legacy", "modern"]:
        for n in sizes:
            extra = {"COLAFLOW_MCP_MAX_SESSIONS": str(n + 100)}
            with running_server(root / f"mcp-memory-{era}-{n}", extra_env=extra) as server:
                await warm_up(server, 10)
                ids = await seed_changes(server, n)
                meter = server.meter()
                await asyncio.sleep(1.0)
                idle = meter.read()
                _tracemalloc_mark(server)
                t0 = time.monotonic()
                pool = await start_workers(f"mcp-{era}", server.port, server.creds.api_key,
                                           [[cid] for cid in ids], _workers_for(n))
                try:
                    ready = sum([(await w.expect("ready", 1800))["ready"] for w in pool])
                    connect_s = time.monotonic() - t0
                    await asyncio.sleep(2.0)  # the connect burst's garbage collected
                    full = meter.read()
                    _tracemalloc_mark(server)
                finally:
                    await stop_workers(pool)
                    meter.stop()
            per = (full.rss_bytes - idle.rss_bytes) / 1024 / ready if ready else None
            run = {"era": era, "clients": n, "ready": ready, "connect_s": round(connect_s, 1),
                   "rss_idle_mib": round(idle.rss_bytes / 2**20, 1),
                   "rss_connected_mib": round(full.rss_bytes / 2**20, 1),
                   "rss_per_client_kib": round(per, 2) if per is not None else None,
                   "loadavg": os.getloadavg()}
            print(f"[mcp-memory] {run}", file=sys.stderr, flush=True)
            _progress("mcp-memory", run)
            runs.append(run)
    return {"scenario": "mcp-memory", "runs": runs}
