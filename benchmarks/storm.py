"""Reconnect storm: N hub clients (re-)establishing at once, ours vs. python-socketio.

``python -m benchmarks storm [--sizes 10000] [--repeats 2]``: every client of a server
that has just come back connects at the same moment and does everything a real one does
before it is useful again. Ours: ``POST /hubs/mcp/negotiate``, the WebSocket with the
connection token, the SignalR handshake, ``SubscribeToPendingChange`` (which reads the
change: catch-up). The peer (``benchmarks/sio_peer.py``): the Engine.IO WebSocket, the
Socket.IO connect, ``subscribe`` (a room join and a read of the change). Clients run in two
worker processes, each starting its half at once (up to 1,000 handshakes in flight per
worker, as many as the listen backlog takes); the time is from the moment a worker starts
its clients to the moment its last one has its subscription answered, the slower worker's.
Per server and round: that time, the clients that got in, the server's CPU seconds over
the storm and per client. Rounds alternate which server goes first. The load average is
recorded: the clients share the machine's two cores with the server.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import start_workers, stop_workers
from benchmarks.scenarios import peer_seed, socketio_peer, warm_up
from benchmarks.server import ServerUnderTest, running_server, seed_changes


async def _storm(server: ServerUnderTest, kind: str, ids: list[str],
                 options: dict[str, Any]) -> dict[str, Any]:
    meter = server.meter()
    before = meter.read()
    t0 = time.monotonic()
    pool = await start_workers(kind, server.port, server.creds.api_key,
                               [[cid] for cid in ids], 2, options,
                               connect_concurrency=1000)
    try:
        readies = [await w.expect("ready", 600) for w in pool]
        wall = time.monotonic() - t0
        after = meter.read()
    finally:
        await stop_workers(pool)
        meter.stop()
    ready = sum(r["ready"] for r in readies)
    cpu = after.cpu_seconds - before.cpu_seconds
    return {"kind": kind, "clients": len(ids), "ready": ready,
            "failed": sum(r["failed"] for r in readies),
            "errors": [e for r in readies for e in r.get("errors", [])][:5],
            "storm_s": round(max(r["connect_s"] for r in readies), 2),
            "wall_with_worker_start_s": round(wall, 2),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_ms_per_client": round(1000 * cpu / ready, 3) if ready else None,
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


async def storm(root: Path, smoke: bool = False, sizes: list[int] | None = None,
                repeats: int = 2, servers: list[str] | None = None) -> dict[str, Any]:
    """The storm at each size, ours and the peer, ``repeats`` rounds alternating."""
    sizes = [5] if smoke else (sizes or [10_000])
    runs = []
    for n in sizes:
        for r in range(1 if smoke else repeats):
            first = servers or ["ours", "sio"]
            order = first if r % 2 == 0 else first[::-1]
            for name in order:
                work = root / f"storm-{name}-{n}-{r}"
                if name == "ours":
                    with running_server(work) as server:
                        await warm_up(server, 10)
                        ids = await seed_changes(server, n)
                        run = await _storm(server, "hub-ws", ids, {"negotiate": True})
                else:
                    with running_server(root / f"creds-{n}-{r}") as ours, \
                            socketio_peer(work, ours.creds) as server:
                        ids = await peer_seed(server, n)
                        run = await _storm(server, "sio", ids, {})
                        # Its shutdown with thousands of closed sockets outlasts the
                        # fixture's grace: measured already, so end it.
                        server.proc.kill()
                        server.proc.wait(30)
                run.update(server=name, round=r)
                print(f"[storm] {run}", file=sys.stderr, flush=True)
                runs.append(run)
                await asyncio.sleep(2.0)  # the previous server's sockets leave TIME_WAIT
    return {"scenario": "storm", "runs": runs}
