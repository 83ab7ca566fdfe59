"""Proposal → ``PendingChangeCreated`` at every reviewer on the review queue.

``python -m benchmarks.review_queue [--reviewers 100] [--proposals 300] [--rate 20]
[--smoke] [--out benchmarks/results]``

A `colaflow-mcp serve` (SQLite, production timings) in its own process; the reviewers
(raw SignalR JSON over WebSockets, each subscribed to the queue with a reviewer token) in a
second process; the orchestrator proposes over REST, open-loop at ``--rate``, as an agent.
Latency is per (reviewer, proposal): arrival − the POST's answer ("after return") and
arrival − the POST sent ("from send"); ``time.monotonic()`` is system-wide on Linux, so
the stamps of the two processes compare. Also: the slowest reviewer per proposal (the
whole fan-out) and the server's CPU per proposal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.miniclient import MiniHttp
from benchmarks.server import HOST, running_server, summary_cpu
from benchmarks.stats import summarize_ms

RS = "\x1e"
HERE = Path(__file__).resolve().parent


# -- the reviewers' process ----------------------------------------------------------------

async def _reviewer(port: int, token: str, arrivals: dict[str, list[float]],
                    ready: asyncio.Event, counter: list[int], total: int) -> None:
    from websockets.asyncio.client import connect

    seen: set[str] = set()
    async with connect(f"ws://{HOST}:{port}/hubs/mcp", max_size=None, ping_interval=None,
                       additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        await ws.recv()
        await ws.send(json.dumps({"type": 1, "invocationId": "q",
                                  "target": "SubscribeToReviewQueue", "arguments": []}) + RS)
        subscribed = False
        last_ping = time.monotonic()
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), 5)
            except TimeoutError:
                raw = ""
            now = time.monotonic()
            for part in str(raw).split(RS):
                if not part:
                    continue
                msg = json.loads(part)
                if msg.get("type") == 1 and msg.get("target") == "PendingChangeCreated":
                    cid = msg["arguments"][0]["id"]
                    if cid in seen:
                        counter[1] += 1  # a duplicate
                        continue
                    seen.add(cid)
                    arrivals.setdefault(cid, []).append(now)
                elif msg.get("type") == 3 and msg.get("invocationId") == "q" and not subscribed:
                    subscribed = True
                    counter[0] += 1
                    if counter[0] == total:
                        ready.set()
            if now - last_ping > 10:  # a SignalR client's keep-alive
                last_ping = now
                await ws.send(json.dumps({"type": 6}) + RS)


async def reviewers_main(port: int, token: str, count: int) -> None:
    """Connect ``count`` reviewers, print ``ready``; on any stdin line print the arrivals."""
    arrivals: dict[str, list[float]] = {}
    ready, counter = asyncio.Event(), [0, 0]  # subscribed, duplicates
    tasks = [asyncio.create_task(_reviewer(port, token, arrivals, ready, counter, count))
             for _ in range(count)]
    await asyncio.wait_for(ready.wait(), 120)
    print(json.dumps({"ready": count}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"arrivals": arrivals, "duplicates": counter[1]}), flush=True)
    for task in tasks:
        task.cancel()


# -- the orchestrator -----------------------------------------------------------------------

async def _propose_all(port: int, api_key: str, count: int, rate: float
                       ) -> list[tuple[str, float, float]]:
    """Open-loop proposals: (id, sent, answered) each."""
    clients = [MiniHttp(HOST, port, {"Authorization": f"Bearer {api_key}"}) for _ in range(8)]
    free: asyncio.Queue[MiniHttp] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    done: list[tuple[str, float, float]] = []
    start = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        client = await free.get()
        try:
            sent = time.monotonic()
            body = await client.json("POST", "/api/mcp/pending-changes", {
                "tool": "create_issue",
                "arguments": {"project_key": "WEB", "title": f"Proposal {i}"}}, expect=201)
            done.append((body["id"], sent, time.monotonic()))
        finally:
            free.put_nowait(client)

    await asyncio.gather(*(one(i) for i in range(count)))
    for c in clients:
        await c.close()
    return done


async def run(workdir: Path, reviewers: int, proposals: int, rate: float,
              warmup: int) -> dict[str, Any]:
    """One measured run; the result as JSON."""
    with running_server(workdir) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.review_queue", "--reviewers-process",
            str(server.port), str(reviewers), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=HERE.parent,
            env={**os.environ, "BENCH_TOKEN": server.creds.reviewer_token},
            limit=2**28)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert json.loads(await proc.stdout.readline()) == {"ready": reviewers}
            await _propose_all(server.port, server.creds.api_key, warmup, rate)
            meter = server.meter()
            before = meter.read()
            sent = await _propose_all(server.port, server.creds.api_key, proposals, rate)
            await asyncio.sleep(1.0)  # the last events' fan-out
            after = meter.read()
            meter.stop()
            proc.stdin.write(b"collect\n")
            await proc.stdin.drain()
            collected = json.loads(await proc.stdout.readline())
            arrivals: dict[str, list[float]] = collected["arrivals"]
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    after_return, from_send, slowest = [], [], []
    missing = 0
    for cid, t_sent, t_answered in sent:
        times = arrivals.get(cid, [])
        missing += reviewers - len(times)
        after_return += [t - t_answered for t in times]
        from_send += [t - t_sent for t in times]
        if times:
            slowest.append(max(times) - t_answered)
    cpu = summary_cpu(before, after)
    return {
        "scenario": "review-queue",
        "reviewers": reviewers, "proposals": proposals, "rate": rate,
        "after_return_ms": summarize_ms(after_return),
        "from_send_ms": summarize_ms(from_send),
        "slowest_reviewer_after_return_ms": summarize_ms(slowest),
        "missing": missing, "duplicates": collected["duplicates"],
        "server_cpu": cpu,
        "server_cpu_ms_per_proposal": round(1000 * cpu["cpu_s"] / proposals, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.review_queue",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--reviewers", type=int, default=100)
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="proposals per second")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--reviewers-process", nargs=2, metavar=("PORT", "N"),
                        help=argparse.SUPPRESS)  # the reviewers' side (internal)
    args = parser.parse_args(argv)
    if args.reviewers_process:
        port, count = map(int, args.reviewers_process)
        asyncio.run(reviewers_main(port, os.environ["BENCH_TOKEN"], count))
        return 0
    reviewers, proposals, warmup = args.reviewers, args.proposals, 30
    if args.smoke:
        reviewers, proposals, warmup = 3, 10, 2
    load_before = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="colaflow-bench-") as tmp:
        result = asyncio.run(run(Path(tmp), reviewers, proposals, args.rate, warmup))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before,
                         "loadavg_after": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"review-queue{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("after_return_ms", "slowest_reviewer_after_"
                                               "return_ms", "missing", "duplicates",
                                               "server_cpu_ms_per_proposal", "machine")}))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
