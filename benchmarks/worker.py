"""A load-generator worker process: runs agents, reports when each decision reached them.

Protocol (JSON lines): the orchestrator writes one config object on stdin; the worker prints
``{"ready": …}`` once every agent is subscribed; after ``{"await": [ids]}``, it prints
``{"done": true}`` once each of those ids (of its own) has arrived; after ``collect``, it
prints ``{"events": …}``.
Run as ``python -m benchmarks.worker``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from benchmarks.agents import Agent, make_agent
from benchmarks.server import raise_fd_limit


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    assignments: list[list[str]] = config["assignments"]
    events: dict[str, float] = {}
    duplicates = 0
    arrived = asyncio.Event()

    def record(change_id: str) -> None:
        nonlocal duplicates
        now = time.monotonic()
        if change_id in events:
            duplicates += 1
            return
        events[change_id] = now
        arrived.set()

    options = dict(config.get("options", {}))
    # Optional per-agent keys (agents of several tenants), parallel to the assignments.
    keys: list[str] = config.get("api_keys") or [config["api_key"]] * len(assignments)
    agents: list[Agent] = [
        make_agent(config["kind"], config["port"], key, ids, record, **options)
        for ids, key in zip(assignments, keys, strict=True)
    ]
    gate = asyncio.Semaphore(int(config.get("connect_concurrency", 64)))
    errors: list[str] = []
    started: list[Agent] = []

    async def start(agent: Agent) -> None:
        async with gate:
            try:
                await agent.start()
                started.append(agent)
            except Exception as exc:
                if len(errors) < 20:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                else:
                    errors.append("")

    if os.environ.get("BENCH_WORKER_TRACE"):  # the probe's own stalls (instrumented.py)
        _lag_probe(os.environ["BENCH_WORKER_TRACE"])
    t0 = time.monotonic()
    # Keep-alive runs from the first connection on: set-up of 10,000 agents outlasts the
    # server's 30 s client timeout.
    pinger = asyncio.create_task(_keep_alive(started, float(config.get("ping_seconds", 10))))
    await asyncio.gather(*(start(a) for a in agents))
    connect_s = time.monotonic() - t0
    runners = [asyncio.create_task(a.run()) for a in started]
    emit({"ready": len(started), "failed": len(agents) - len(started),
          "errors": [e for e in errors if e][:20], "connect_s": round(connect_s, 3),
          "ports": [p for a in started for p in a.local_ports()],
          "waiting": [cid for a in started for cid in a.change_ids]})

    awaited: set[str] = set()

    async def announce_done() -> None:
        while not awaited <= events.keys():
            await arrived.wait()
            arrived.clear()
        emit({"done": True})

    done_task: asyncio.Task[None] | None = None
    while True:
        line = await reader.readline()
        if not line or line.strip() == b"collect":
            break
        request = json.loads(line)
        mine = {a_id for a in started for a_id in a.change_ids}
        awaited = {cid for cid in request["await"] if cid in mine}
        done_task = asyncio.create_task(announce_done())
    emit({"events": events, "duplicates": duplicates,
          "runner_errors": sum(1 for r in runners if r.done() and r.exception() is not None),
          "agents_closed": sum(1 for r in runners if r.done())})
    pinger.cancel()
    if done_task is not None:
        done_task.cancel()
    for r in runners:
        r.cancel()
    if config.get("close", True):
        await asyncio.wait_for(
            asyncio.gather(*(a.close() for a in started), return_exceptions=True), 30)


def _lag_probe(path: str) -> None:
    """Every 2 ms, note when this process's loop ran a timer over 0.25 ms late
    (``TT wlag pid=… t=… ms=…``, ``time.monotonic()``), appended to ``path``."""
    loop = asyncio.get_running_loop()
    out = open(path, "a", buffering=1)  # noqa: SIM115
    pid = os.getpid()

    def probe(due: float) -> None:
        now = time.monotonic()
        if now - due > 0.00025:
            out.write(f"TT wlag pid={pid} t={due:.6f} ms={(now - due) * 1000:.3f}\n")
        loop.call_later(0.002, probe, now + 0.002)

    loop.call_later(0.002, probe, time.monotonic() + 0.002)


async def _keep_alive(agents: list[Agent], period: float) -> None:
    """Each agent sends a ping every ``period`` seconds, spread evenly over the period.

    ``agents`` grows while agents connect; each pass pings those connected by then.
    """
    while True:
        batch = list(agents)
        if not batch:
            await asyncio.sleep(period / 10)
            continue
        gap = period / len(batch)
        for agent in batch:
            await asyncio.sleep(gap)
            try:
                await agent.ping()
            except Exception:
                pass  # a dead agent shows up as missing events


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
