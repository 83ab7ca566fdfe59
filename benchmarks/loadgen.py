"""The load generator's orchestrator: worker processes for agents, a REST decider, meters.

``run_load`` is one measured run: agents (in ``workers`` processes) subscribe to their own
pending changes, the decider approves/rejects them at ``rate`` per second through REST, and
the result is, per decision, the time from the decide call returning to the event arriving,
plus server CPU, RSS and TCP bytes over the decision phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.miniclient import MiniHttp
from benchmarks.server import (
    HOST,
    ServerUnderTest,
    summary_cpu,
    tcp_counters,
    wire_delta,
)
from benchmarks.stats import summarize_ms


@dataclass
class Decision:
    change_id: str
    started: float
    returned: float
    status: int


async def decide(port: int | list[int], token: str, change_ids: list[str], rate: float,
                 concurrency: int = 16, approve_share: float = 0.5,
                 path: str = "/api/mcp/pending-changes/{id}/{verb}") -> list[Decision]:
    """Open-loop decider: decision ``i`` is due at ``i / rate``; ``concurrency`` connections.

    Every ``1/approve_share``-th decision approves (which executes the change), the rest
    reject. A decider that falls behind its schedule sends at once (the achieved rate is
    reported next to the target). With several ports, lane ``k`` talks to ``ports[k % n]``
    (decisions split across instances).
    """
    ports = port if isinstance(port, list) else [port]
    results: list[Decision] = []
    next_index = 0
    t0 = time.monotonic() + 0.05
    every = max(1, round(1 / approve_share)) if approve_share > 0 else 0

    async def lane(k: int) -> None:
        nonlocal next_index
        http = MiniHttp(HOST, ports[k % len(ports)], {"Authorization": f"Bearer {token}"})
        await http.connect()
        try:
            while next_index < len(change_ids):
                i = next_index
                next_index += 1
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                cid = change_ids[i]
                approve = every > 0 and i % every == 0
                verb = "approve" if approve else "reject"
                started = time.monotonic()
                status, _ = await http.request(
                    "POST", path.format(id=cid, verb=verb),
                    None if approve else {"reason": "benchmark"})
                results.append(Decision(cid, started, time.monotonic(), status))
        finally:
            await http.close()

    await asyncio.gather(*(lane(k) for k in range(max(1, min(concurrency, len(change_ids))))))
    return results


def achieved_rate(decisions: list[Decision]) -> float | None:
    """Successful decisions per second, from the first send to the last return."""
    ok = [d for d in decisions if d.status == 200]
    if len(ok) < 2:
        return None
    span = max(d.returned for d in ok) - min(d.started for d in ok)
    return round(len(ok) / span, 1) if span > 0 else None


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    lines: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    pump: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.lines.put({"exited": self.proc.returncode})
                return
            if line.startswith(b"{"):
                await self.lines.put(json.loads(line))

    async def expect(self, key: str, within: float) -> dict[str, Any]:
        """The next message with ``key`` (bounded)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.lines.get()
                if key in msg:
                    return msg
                if "exited" in msg:
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise RuntimeError(f"worker exited: {err.decode()[-3000:]}")

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()


async def start_workers(kind: str, port: int, api_key: str, assignments: list[list[str]],
                        workers: int, options: dict[str, Any] | None = None,
                        connect_concurrency: int = 64, api_keys: list[str] | None = None
                        ) -> list[Worker]:
    """``workers`` processes sharing the agents; ``api_keys``: one per agent (else ``api_key``)."""
    started = []
    for w in range(workers):
        share = assignments[w::workers]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=2**26)
        worker = Worker(proc)
        worker.pump = asyncio.create_task(worker._pump())
        await worker.send(json.dumps({
            "kind": kind, "port": port, "api_key": api_key, "assignments": share,
            "options": options or {}, "connect_concurrency": connect_concurrency,
            **({"api_keys": api_keys[w::workers]} if api_keys is not None else {}),
        }))
        started.append(worker)
    return started


async def stop_workers(workers: list[Worker]) -> None:
    for w in workers:
        if w.proc.returncode is None:
            try:
                async with asyncio.timeout(60):
                    if w.proc.stdin is not None:
                        w.proc.stdin.close()
                    await w.proc.wait()
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        if w.pump is not None:
            w.pump.cancel()


def split(ids: list[str], agents: int, per_agent: int) -> list[list[str]]:
    return [ids[i * per_agent:(i + 1) * per_agent] for i in range(agents)]


async def run_load(
    server: ServerUnderTest, *, kind: str, change_ids: list[str], agents: int, rate: float,
    per_agent: int = 1, decide_ids: list[str] | None = None, workers: int = 1,
    options: dict[str, Any] | None = None, decide_port: int | list[int] | None = None,
    agent_port: int | None = None, concurrency: int = 16, approve_share: float = 0.5,
    connect_timeout: float = 600.0, settle_timeout: float = 30.0,
    decide_path: str = "/api/mcp/pending-changes/{id}/{verb}",
    on_ready: Callable[[], Awaitable[None]] | None = None,
    api_keys: list[str] | None = None,
    decider: Callable[[list[str]], Awaitable[list[Decision]]] | None = None,
) -> dict[str, Any]:
    """One measured run; see the module docstring. Returns a JSON-able result.

    ``api_keys``: one per agent (agents of several tenants); ``decider``: decides the given
    ids instead of ``decide`` (e.g. each tenant's with its own reviewer token).
    """
    agent_port = agent_port or server.port
    decide_port = decide_port or server.port
    assignments = split(change_ids, agents, per_agent)
    meter = server.meter()
    idle = meter.read()
    t_connect = time.monotonic()
    pool = await start_workers(kind, agent_port, server.creds.api_key, assignments,
                               min(workers, agents), options, api_keys=api_keys)
    try:
        ready_msgs = [await w.expect("ready", connect_timeout) for w in pool]
        connect_s = time.monotonic() - t_connect
        ready = sum(m["ready"] for m in ready_msgs)
        ports = {p for m in ready_msgs for p in m["ports"]}
        connected = meter.read()
        await asyncio.sleep(1.0)  # let set-up work (key cache, GC) settle before measuring
        connected = meter.read()
        if on_ready is not None:  # e.g. start a profiler on the steady state
            await on_ready()
        wire0 = await asyncio.to_thread(tcp_counters, agent_port, ports)
        before = meter.read()
        # Only decide what a connected agent waits for.
        waiting = {cid for m in ready_msgs for cid in m["waiting"]}
        pool_ids = decide_ids if decide_ids is not None else change_ids
        to_decide = [cid for cid in pool_ids if cid in waiting]
        t_dec = time.monotonic()
        if decider is not None:
            decisions = await decider(to_decide)
        else:
            decisions = await decide(decide_port, server.creds.reviewer_token, to_decide,
                                     rate, concurrency, approve_share, decide_path)
        decide_s = time.monotonic() - t_dec
        decided = [d.change_id for d in decisions if d.status == 200]
        for w in pool:
            await w.send(json.dumps({"await": decided}))
        try:
            for w in pool:
                await w.expect("done", settle_timeout)
        except TimeoutError:
            pass
        after = meter.read()
        wire1 = await asyncio.to_thread(tcp_counters, agent_port, ports)
        for w in pool:
            await w.send("collect")
        collected = [await w.expect("events", 120) for w in pool]
    finally:
        await stop_workers(pool)
        meter.stop()
    events: dict[str, float] = {}
    for c in collected:
        events.update(c["events"])
    ok = [d for d in decisions if d.status == 200]
    after_return = [events[d.change_id] - d.returned for d in ok if d.change_id in events]
    since_call = [events[d.change_id] - d.started for d in ok if d.change_id in events]
    call = [d.returned - d.started for d in ok]
    delivered = len(after_return)
    cpu = summary_cpu(before, after)
    wire = wire_delta(wire0, wire1)
    result: dict[str, Any] = {
        "kind": kind, "loadavg_1m": round(os.getloadavg()[0], 2), "agents": agents,
        "ready": ready, "per_agent": per_agent,
        "connect_errors": [e for m in ready_msgs for e in m.get("errors", [])][:5],
        "connect_s": round(connect_s, 2),
        "target_rate": rate, "decisions": len(decisions), "decisions_ok": len(ok),
        "decide_s": round(decide_s, 3),
        "achieved_rate": achieved_rate(decisions),
        "delivered": delivered, "missing": len(ok) - delivered,
        "duplicates": sum(c["duplicates"] for c in collected),
        "agents_closed": sum(c.get("agents_closed", 0) for c in collected),
        "latency_ms": summarize_ms(after_return),
        "since_call_ms": summarize_ms(since_call),
        "call_ms": summarize_ms(call),
        "negative_share": round(sum(1 for v in after_return if v < 0) / delivered, 3)
        if delivered else None,
        "server_cpu": cpu,
        "cpu_ms_per_delivered": round(cpu["cpu_s"] * 1000 / delivered, 4) if delivered else None,
        "rss_idle_mib": round(idle.rss_bytes / 2**20, 1),
        "rss_connected_mib": round(connected.rss_bytes / 2**20, 1),
        "rss_per_connection_kib": round((connected.rss_bytes - idle.rss_bytes) / 1024 / ready, 2)
        if ready else None,
        "wire": wire,
        "wire_bytes_per_delivered": round(wire["wire_bytes"] / delivered, 1)
        if wire and delivered else None,
        "series": meter.series(t_connect),
        "phase_monotonic": [round(t_dec, 3), round(t_dec + decide_s, 3)],
        # Per decision, in decision order: seconds into the phase, latency after return (ms).
        "samples": [[round(d.started - t_dec, 4), round((events[d.change_id] - d.returned)
                                                         * 1000, 3)]
                    for d in sorted(ok, key=lambda d: d.started) if d.change_id in events],
        # The slow ones (after return > 0.5 ms), to set beside a server's trace:
        # [call sent, call returned, event arrived], time.monotonic().
        "slow_monotonic": [[round(d.started, 6), round(d.returned, 6),
                            round(events[d.change_id], 6)]
                           for d in ok if d.change_id in events
                           and events[d.change_id] - d.returned > 0.0005],
    }
    return result
