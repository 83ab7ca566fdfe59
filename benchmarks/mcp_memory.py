"""Memory per idle MCP session: legacy sessions and modern listen streams, RSS per client.

``python -m benchmarks mcp-memory [--sizes 1000,10000] [--eras legacy,modern]``: for each
era and size, a fresh ``colaflow-mcp serve``; N official-SDK clients (in worker processes)
each watch one pending change — legacy: ``initialize``, the GET stream,
``resources/subscribe``; modern: one ``subscriptions/listen`` stream — and then sit idle.
The server's RSS before they connect and 2 s after the last one is ready, divided by N; and
whether every client got in (the 10,000-session target). ``BENCH_INSTRUMENT=tracemalloc``
writes the Python allocations' growth by file into the server's log (printed at the end).

``--client raw`` runs the same sessions from ``mcp_raw`` (the SDK client's requests over
raw HTTP: ~10x cheaper to set up, so 10,000 sessions fit in minutes on a shared machine);
``--client sdk`` (the default) the official SDK client. ``--verify N`` then approves N of
the watched changes over REST and waits until each reached its session (the sessions are
held and working, not just open). ``--settle S``: the seconds idle before the RSS is read
(2 by default; idle legacy sessions are parked after 10 s, so 15 measures them parked).
``--warm-mcp K``: before the idle reading, K clients of the era connect at once and go
(the baseline of a server that has served MCP before; 0, the default, reads it after the
REST warm-up alone, the definition of every figure before 2026-12-02's modern-fixed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Worker, decide, start_workers, stop_workers
from benchmarks.scenarios import _progress, _tracemalloc_mark, _workers_for, warm_up
from benchmarks.server import ServerUnderTest, running_server, seed_changes


async def mcp_memory(root: Path, smoke: bool = False, sizes: list[int] | None = None,
                     eras: list[str] | None = None, client: str = "sdk",
                     verify: int = 0, settle: float = 2.0, warm_mcp: int = 0
                     ) -> dict[str, Any]:
    """RSS per idle MCP client, both eras."""
    sizes = [3] if smoke else (sizes or [1000])
    if client not in ("sdk", "raw"):
        raise ValueError(f"client is sdk or raw, not {client!r}")
    kind_suffix = "-raw" if client == "raw" else ""
    runs = []
    for era in eras or ["legacy", "modern"]:
        for n in sizes:
            extra = {"COLAFLOW_MCP_MAX_SESSIONS": str(n + 100)}
            with running_server(root / f"mcp-memory-{era}-{n}", extra_env=extra) as server:
                await warm_up(server, 10)
                ids = await seed_changes(server, n + warm_mcp)
                if warm_mcp:
                    ids = await _warm_mcp(server, f"mcp-{era}{kind_suffix}", ids, warm_mcp)
                meter = server.meter()
                await asyncio.sleep(1.0)
                idle = meter.read()
                _tracemalloc_mark(server)
                t0 = time.monotonic()
                pool = await start_workers(f"mcp-{era}{kind_suffix}", server.port,
                                           server.creds.api_key, [[cid] for cid in ids],
                                           _workers_for(n))
                try:
                    reports = [await w.expect("ready", 1800) for w in pool]
                    ready = sum(r["ready"] for r in reports)
                    failed = sum(r["failed"] for r in reports)
                    errors = [e for r in reports for e in r["errors"]][:20]
                    connect_s = time.monotonic() - t0
                    # The connect burst's garbage collected; with ``settle`` past the
                    # park delay (``sdk_hooks.parking.PARK_AFTER_SECONDS``), idle legacy sessions
                    # are parked.
                    await asyncio.sleep(settle)
                    full = meter.read()
                    load_connected = os.getloadavg()
                    mcp_health = _mcp_health(server.port)
                    _tracemalloc_mark(server)
                    verified = await _verify(server, pool, ids, verify) if verify else None
                finally:
                    await stop_workers(pool)
                    meter.stop()
                server_errors = _logged_errors(server.log_path)
            per = (full.rss_bytes - idle.rss_bytes) / 1024 / ready if ready else None
            run = {"era": era, "client": client, "clients": n, "ready": ready,
                   "failed": failed, "errors": errors, "server_errors": server_errors,
                   "connect_s": round(connect_s, 1), "settle_s": settle,
                   "rss_idle_mib": round(idle.rss_bytes / 2**20, 1),
                   "rss_connected_mib": round(full.rss_bytes / 2**20, 1),
                   "rss_per_client_kib": round(per, 2) if per is not None else None,
                   "loadavg_connected": load_connected, "verified": verified,
                   "warm_mcp": warm_mcp,
                   "mcp_health": mcp_health,
                   "loadavg": os.getloadavg()}
            print(f"[mcp-memory] {run}", file=sys.stderr, flush=True)
            _progress("mcp-memory", run)
            runs.append(run)
    return {"scenario": "mcp-memory", "runs": runs}


async def _warm_mcp(server: ServerUnderTest, kind: str, ids: list[str], count: int
                    ) -> list[str]:
    """``count`` clients of the era connect at once, are ready, and go (the server has
    served a burst of MCP requests before the idle reading, as any server in use has);
    the ids left for the measured clients."""
    pool = await start_workers(kind, server.port, server.creds.api_key,
                               [[cid] for cid in ids[-count:]], 1)
    try:
        for w in pool:
            report = await w.expect("ready", 600)
            if report["ready"] != count:
                raise RuntimeError(f"warm-up: {report['ready']} of {count} ready")
    finally:
        await stop_workers(pool)
    return ids[:-count]


async def _verify(server: ServerUnderTest, pool: list[Worker], ids: list[str], count: int
                  ) -> dict[str, Any]:
    """Approve ``count`` watched changes (spread over all sessions); every one must reach
    its session as ``notifications/resources/updated`` within the bound."""
    step = max(1, len(ids) // count)
    sample = ids[::step][:count]
    t0 = time.monotonic()
    decisions = await decide(server.port, server.creds.reviewer_token, sample, rate=200.0,
                             concurrency=8, approve_share=1.0)
    for w in pool:
        await w.send(json.dumps({"await": sample}))
    delivered = True
    try:
        for w in pool:
            await w.expect("done", 120)
    except TimeoutError:
        delivered = False
    return {"approved": sum(1 for d in decisions if d.status == 200), "sample": len(sample),
            "all_delivered": delivered, "seconds": round(time.monotonic() - t0, 2)}


def _mcp_health(port: int) -> dict[str, Any]:
    """The server's MCP counters (``/health``): subscribed, parked legacy sessions."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        body = json.loads(conn.getresponse().read() or b"{}")
    except (OSError, ValueError):
        return {}
    finally:
        conn.close()
    mcp = body.get("mcp") if isinstance(body, dict) else None
    return mcp if isinstance(mcp, dict) else {}


def _logged_errors(log_path: Path) -> list[str]:
    """The server's WARNING and ERROR lines and tracebacks (its log level is warning)."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return [line[:300] for line in lines
            if " ERROR " in line or " WARNING " in line or line.startswith("Traceback")][:20]
