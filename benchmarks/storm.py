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
the storm and per client, the clients' CPU seconds. Rounds alternate which server goes
first. The load average is recorded: the clients share the machine's two cores with the
server.

``--client node`` (default ``python``): the clients are ``tests/js/hub_storm.mjs``, the
same wire work per client (the same requests, the same key spellings, the same waits) in
one Node.js process with the ``ws`` package, for both servers, up to 2,000 set-ups in
flight. A Python WebSocket client costs about as much CPU per connection as the server,
so with the Python clients the wall time measures the clients as much as the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import start_workers, stop_workers
from benchmarks.scenarios import peer_seed, socketio_peer, warm_up
from benchmarks.server import ServerUnderTest, running_server, seed_changes

JS = Path(__file__).resolve().parent.parent / "tests" / "js"
NODE_CONCURRENCY = 2000


def _node_ready() -> str:
    """The node binary, with ``tests/js``'s packages installed (``npm ci`` if missing)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("--client node needs Node.js (node and npm on PATH)")
    if not (JS / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=JS, check=True)
    return node


async def _node_storm(port: int, api_key: str, kind: str, ids: list[str]
                      ) -> tuple[list[dict[str, Any]], asyncio.subprocess.Process]:
    """Run the clients in ``hub_storm.mjs``; its ready line, and the process (still open)."""
    proc = await asyncio.create_subprocess_exec(
        _node_ready(), str(JS / "hub_storm.mjs"), cwd=JS, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=2**24)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"kind": "sio" if kind == "sio" else "hub", "port": port,
                                 "apiKey": api_key, "ids": ids, "negotiate": True,
                                 "concurrency": NODE_CONCURRENCY}).encode() + b"\n")
    await proc.stdin.drain()
    async with asyncio.timeout(600):
        line = await proc.stdout.readline()
    if not line:
        err = await proc.stderr.read() if proc.stderr is not None else b""
        raise RuntimeError(f"hub_storm.mjs exited: {err.decode()[-3000:]}")
    return [json.loads(line)], proc


async def _stop_node(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _storm(server: ServerUnderTest, kind: str, ids: list[str],
                 options: dict[str, Any], client: str = "python") -> dict[str, Any]:
    meter = server.meter()
    before = meter.read()
    t0 = time.monotonic()
    if client == "node":
        try:
            readies, proc = await _node_storm(server.port, server.creds.api_key, kind, ids)
            wall = time.monotonic() - t0
            after = meter.read()
        finally:
            meter.stop()
        await _stop_node(proc)
    else:
        pool = await start_workers(kind, server.port, server.creds.api_key,
                                   [[cid] for cid in ids], 2, options,
                                   connect_concurrency=1000)
        try:
            readies = [await w.expect("ready", 600) for w in pool]
            wall = time.monotonic() - t0
            after = meter.read()
            for r, w in zip(readies, pool, strict=True):
                r["client_cpu_s"] = _cpu_seconds(w.proc.pid)
        finally:
            await stop_workers(pool)
            meter.stop()
    ready = sum(r["ready"] for r in readies)
    cpu = after.cpu_seconds - before.cpu_seconds
    client_cpu = [r.get("client_cpu_s") for r in readies]
    return {"kind": kind, "client": client, "clients": len(ids), "ready": ready,
            "failed": sum(r["failed"] for r in readies),
            "errors": [e for r in readies for e in r.get("errors", [])][:5],
            "storm_s": round(max(r["connect_s"] for r in readies), 2),
            "wall_with_worker_start_s": round(wall, 2),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_ms_per_client": round(1000 * cpu / ready, 3) if ready else None,
            "client_cpu_s": (round(sum(c for c in client_cpu if c is not None), 2)
                             if all(c is not None for c in client_cpu) else None),
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (psutil), None if it is gone."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return round(times.user + times.system, 2)


async def storm(root: Path, smoke: bool = False, sizes: list[int] | None = None,
                repeats: int = 2, servers: list[str] | None = None,
                client: str = "python") -> dict[str, Any]:
    """The storm at each size, ours and the peer, ``repeats`` rounds alternating;
    ``client``: ``python`` (worker processes) or ``node`` (``tests/js/hub_storm.mjs``)."""
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
                        run = await _storm(server, "hub-ws", ids, {"negotiate": True}, client)
                else:
                    with running_server(root / f"creds-{n}-{r}") as ours, \
                            socketio_peer(work, ours.creds) as server:
                        ids = await peer_seed(server, n)
                        run = await _storm(server, "sio", ids, {}, client)
                        # Its shutdown with thousands of closed sockets outlasts the
                        # fixture's grace: measured already, so end it.
                        server.proc.kill()
                        server.proc.wait(30)
                run.update(server=name, round=r)
                print(f"[storm] {run}", file=sys.stderr, flush=True)
                runs.append(run)
                await asyncio.sleep(2.0)  # the previous server's sockets leave TIME_WAIT
    return {"scenario": "storm", "client": client, "runs": runs}
