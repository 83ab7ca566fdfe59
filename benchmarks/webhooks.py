"""Webhooks: decision → webhook received, and approvals/s with 0, 1 and 10 endpoints.

``python -m benchmarks.webhooks [--approvals 2000] [--latency-decisions 500] [--rate 50]
[--endpoints 0,1,10] [--postgres-url URL] [--smoke] [--out benchmarks/results]``

One run, one leg per endpoint count, each on a fresh `colaflow-mcp serve` (SQLite, or a
fresh PostgreSQL database with ``--postgres-url``, an admin URL; production timings,
private networks allowed for the loopback receiver) with that many endpoints added by
``colaflow-mcp webhooks add``. A receiver process (a bare HTTP/1.1 server on 127.0.0.1,
keep-alive, answering 204) stamps every delivery on arrival with ``time.monotonic()``
(system-wide on Linux, so it compares with the orchestrator's). Per
leg:

1. **Throughput**: ``--approvals`` approvals (each executes: an issue is created),
   closed loop over 16 connections: approvals/s as the reviewers see it. Then the wait
   until every queued delivery arrived (the sender's backlog), as deliveries/s.
2. **Latency**: ``--latency-decisions`` approvals open-loop at ``--rate``: arrival of the
   ``pending_change.approved`` delivery at each endpoint − the approve call's answer
   ("after return"; negative when the webhook won the race) and − its send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import achieved_rate, decide
from benchmarks.scenarios import _pg_admin, create_pg_database, warm_up
from benchmarks.server import COLAFLOW, HOST, running_server, seed_changes, summary_cpu
from benchmarks.stats import summarize_ms

HERE = Path(__file__).resolve().parent
ALLOW = {"COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}


# -- the receiver's process -------------------------------------------------------------------

async def receiver_main() -> None:
    """Serve on a free port, print it; on stdin ``count`` print the deliveries so far, on
    ``collect`` every arrival ``[t, path, webhook-id, type, change id]``."""
    arrivals: list[list[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.monotonic()
                event = json.loads(body)
                arrivals.append([now, path, headers.get("webhook-id"), event["type"],
                                 event["data"]["pendingChangeId"]])
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0, backlog=1024)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line:
            return
        if line == "count":
            print(json.dumps({"count": len(arrivals),
                              "unique": len({a[2] for a in arrivals})}), flush=True)
        elif line == "collect":
            print(json.dumps({"arrivals": arrivals}), flush=True)


class Receiver:
    """The receiver process, from the orchestrator's side."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        return answer

    async def wait_for(self, total: int, within: float) -> float:
        """Seconds until ``total`` deliveries arrived (asking every 50 ms, bounded)."""
        t0 = time.monotonic()
        while (await self.ask("count"))["count"] < total:
            if time.monotonic() - t0 > within:
                raise TimeoutError(f"fewer than {total} deliveries after {within}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0


async def start_receiver() -> Receiver:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.webhooks", "--receiver-process",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=HERE.parent,
        limit=2**28)
    assert proc.stdout is not None
    port = json.loads(await proc.stdout.readline())["port"]
    return Receiver(proc, port)


# -- the orchestrator -----------------------------------------------------------------------

def add_endpoints(server: Any, port: int, leg: int, count: int) -> None:
    env = {**os.environ, **ALLOW, "COLAFLOW_DATABASE_URL": server.database_url}
    env = {k: v for k, v in env.items() if not k.startswith("COLAFLOW_") or k in (
        "COLAFLOW_DATABASE_URL", *ALLOW)}
    for i in range(count):
        subprocess.run([COLAFLOW, "webhooks", "add", "--tenant", server.creds.tenant,
                        "--url", f"http://{HOST}:{port}/leg{leg}/e{i}", "--json"],
                       env=env, cwd=server.workdir, check=True, capture_output=True,
                       timeout=60)


async def leg(workdir: Path, receiver: Receiver, endpoints: int, approvals: int,
              latency_decisions: int, rate: float, warm: int, pg_admin_url: str | None = None
              ) -> dict[str, Any]:
    if pg_admin_url is None:
        return await _leg(workdir, None, receiver, endpoints, approvals, latency_decisions,
                          rate, warm)
    url, name = await create_pg_database(pg_admin_url)
    try:
        return await _leg(workdir, url, receiver, endpoints, approvals, latency_decisions,
                          rate, warm)
    finally:
        await _pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _leg(workdir: Path, database_url: str | None, receiver: Receiver, endpoints: int,
               approvals: int, latency_decisions: int, rate: float, warm: int
               ) -> dict[str, Any]:
    with running_server(workdir, database_url=database_url, extra_env=ALLOW) as server:
        await asyncio.to_thread(add_endpoints, server, receiver.port, endpoints, endpoints)
        # Seeding proposes one change over REST (a created event for every endpoint) and
        # clones the rest in SQL (no event); every decision is an event.
        base = (await receiver.ask("count"))["count"]
        await warm_up(server, warm)
        await receiver.wait_for(base + (warm + 1) * endpoints, 120)

        base = (await receiver.ask("count"))["count"]
        ids = await seed_changes(server, approvals)
        await receiver.wait_for(base + endpoints, 30)  # the template's creation
        expected = base + endpoints + endpoints * approvals
        meter = server.meter()
        before = meter.read()
        t0 = time.monotonic()
        decisions = await decide(server.port, server.creds.reviewer_token, ids, rate=1e9,
                                 concurrency=16, approve_share=1.0)
        wall = time.monotonic() - t0
        after = meter.read()
        drain = await receiver.wait_for(expected, 600) if endpoints else 0.0
        drained = time.monotonic() - t0
        after_drain = meter.read()
        meter.stop()
        ok = [d for d in decisions if d.status == 200]
        throughput = {
            "approvals_ok": len(ok), "approvals_per_s": achieved_rate(decisions),
            "wall_s": round(wall, 2), "call_ms": summarize_ms(d.returned - d.started
                                                             for d in ok),
            "server_cpu_ms_per_approval": round(
                1000 * summary_cpu(before, after)["cpu_s"] / max(1, len(ok)), 3),
            "deliveries": endpoints * len(ok),
            "backlog_drained_after_last_approval_s": round(drain, 2),
            "deliveries_per_s": (round(endpoints * len(ok) / drained, 1)
                                 if endpoints else None),
            "server_cpu_ms_per_approval_incl_deliveries": round(
                1000 * summary_cpu(before, after_drain)["cpu_s"] / max(1, len(ok)), 3),
        }

        latency: dict[str, Any] = {}
        if endpoints and latency_decisions:
            mark = (await receiver.ask("count"))["count"]
            ids = await seed_changes(server, latency_decisions)
            await receiver.wait_for(mark + endpoints, 30)  # the template's creation
            decisions = await decide(server.port, server.creds.reviewer_token, ids,
                                     rate=rate, concurrency=16, approve_share=1.0)
            await receiver.wait_for(mark + endpoints * (latency_decisions + 1), 120)
            arrivals = (await receiver.ask("collect"))["arrivals"]
            mine = f"/leg{endpoints}/"
            at: dict[str, list[float]] = {}
            seen: set[str] = set()
            duplicates = 0
            for t, path, msg_id, kind, cid in arrivals:
                if not path.startswith(mine) or kind != "pending_change.approved":
                    continue
                if msg_id in seen:
                    duplicates += 1
                    continue
                seen.add(msg_id)
                at.setdefault(cid, []).append(t)
            after_return, from_send, missing = [], [], 0
            for d in decisions:
                times = at.get(d.change_id, [])
                missing += endpoints - len(times)
                after_return += [t - d.returned for t in times]
                from_send += [t - d.started for t in times]
            latency = {"decisions": len(decisions), "rate": rate,
                       "achieved_rate": achieved_rate(decisions),
                       "after_return_ms": summarize_ms(after_return),
                       "from_send_ms": summarize_ms(from_send),
                       "missing": missing, "duplicates": duplicates}
    return {"endpoints": endpoints, "throughput": throughput, "latency": latency}


async def run(root: Path, endpoint_counts: list[int], approvals: int, latency_decisions: int,
              rate: float, warm: int, pg_admin_url: str | None = None) -> dict[str, Any]:
    receiver = await start_receiver()
    try:
        legs = [await leg(root / f"leg-{n}", receiver, n, approvals, latency_decisions, rate,
                          warm, pg_admin_url) for n in endpoint_counts]
    finally:
        assert receiver.proc.stdin is not None
        receiver.proc.stdin.close()
        await receiver.proc.wait()
    return {"scenario": "webhooks", "database": "postgresql" if pg_admin_url else "sqlite",
            "approvals": approvals,
            "latency_decisions": latency_decisions, "rate": rate, "legs": legs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhooks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=2000)
    parser.add_argument("--latency-decisions", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="approvals/s, latency phase")
    parser.add_argument("--endpoints", default="0,1,10")
    parser.add_argument("--postgres-url", help="a PostgreSQL admin URL: each leg on a fresh "
                        "database there (else SQLite)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--receiver-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver_process:
        asyncio.run(receiver_main())
        return 0
    approvals, latency_decisions, warm = args.approvals, args.latency_decisions, 60
    if args.smoke:
        approvals, latency_decisions, warm = 20, 10, 5
    counts = [int(c) for c in args.endpoints.split(",")]
    load_before = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="colaflow-bench-") as tmp:
        result = asyncio.run(run(Path(tmp), counts, approvals, latency_decisions, args.rate,
                                 warm, args.postgres_url))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before,
                         "loadavg_after": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "webhooks" + ("-postgres" if args.postgres_url else "") + (
        "-smoke" if args.smoke else "")
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for item in result["legs"]:
        t, lat = item["throughput"], item["latency"]
        print(json.dumps({"endpoints": item["endpoints"],
                          "approvals_per_s": t["approvals_per_s"],
                          "deliveries_per_s": t["deliveries_per_s"],
                          "latency_after_return_ms": lat.get("after_return_ms"),
                          "missing": lat.get("missing"), "duplicates": lat.get("duplicates")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
