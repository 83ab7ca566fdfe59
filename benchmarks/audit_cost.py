"""Scenario ``audit``: what the audit entry costs per decision and per proposal.

Two legs on the same machine in the same run, alternating which goes first each round:
the server as shipped (every proposal and decision appends to the tenant's hash chain in
its transaction) and the same server with the benchmark-only ``audit-off`` instrument
(``benchmarks/instrumented.py``: no recorder is told, nothing else changes). Each leg is
a fresh server on a fresh SQLite database: proposals over REST, then decisions (every
other one approves and executes, the rest reject) open-loop at the same rate, with the
server's CPU (psutil) over each phase and every call's latency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks.miniclient import MiniHttp
from benchmarks.scenarios import _spread, baseline, warm_up
from benchmarks.server import (
    HOST,
    ServerUnderTest,
    running_server,
    seed_changes,
    summary_cpu,
)
from benchmarks.stats import summarize_ms

LEGS = {"audit-on": {}, "audit-off": {"BENCH_INSTRUMENT": "audit-off"}}


async def _propose(server: ServerUnderTest, count: int, rate: float, lanes: int = 8
                   ) -> dict[str, Any]:
    """``count`` create_issue proposals over REST, open-loop at ``rate``."""
    calls: list[tuple[float, float, int]] = []
    next_index = 0
    t0 = time.monotonic() + 0.05
    meter = server.meter()
    before = meter.read()

    async def lane() -> None:
        nonlocal next_index
        http = MiniHttp(HOST, server.port, {"Authorization": f"Bearer {server.creds.api_key}"})
        await http.connect()
        try:
            while next_index < count:
                i = next_index
                next_index += 1
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = time.monotonic()
                status, _ = await http.request("POST", "/api/mcp/pending-changes", {
                    "tool": "create_issue", "rationale": "benchmark",
                    "arguments": {"project_key": "WEB", "title": f"Benchmark {i}"}})
                calls.append((started, time.monotonic(), status))
        finally:
            await http.close()

    await asyncio.gather(*(lane() for _ in range(lanes)))
    after = meter.read()
    meter.stop()
    ok = [c for c in calls if c[2] == 201]
    cpu = summary_cpu(before, after)
    return {"proposals_ok": len(ok), "call_ms": summarize_ms(b - a for a, b, _ in ok),
            "server_cpu": cpu,
            "cpu_ms_per_proposal": round(cpu["cpu_s"] * 1000 / len(ok), 4) if ok else None}


async def _entries(database_url: str) -> int:
    """Audit entries in the leg's database (proves the leg did what it says)."""
    from sqlalchemy import func
    from sqlmodel import select

    from colaflow_mcp.store.engine import Database
    from colaflow_mcp.store.tables import AuditEntry

    db = Database(database_url)
    try:
        async with db.read() as s:
            return int((await s.exec(select(func.count()).select_from(AuditEntry))).one())
    finally:
        await db.dispose()


async def _leg(workdir: Path, leg: str, count: int, rate: float, warm: int
               ) -> dict[str, Any]:
    with running_server(workdir, extra_env=LEGS[leg]) as server:
        await warm_up(server, warm)
        proposals = await _propose(server, count, rate)
        decisions = await baseline(server, count, rate, ids=await seed_changes(server, count))
        entries = await _entries(server.database_url)
    return {"proposals": proposals, "decisions": decisions, "audit_entries": entries}


async def audit(root: Path, smoke: bool = False, count: int = 1000, rate: float = 100.0,
                repeats: int = 3) -> dict[str, Any]:
    """``repeats`` rounds of both legs; per-decision and per-proposal differences."""
    if smoke:
        count, rate, repeats = 20, 50.0, 1
    rounds: list[dict[str, Any]] = []
    for i in range(repeats):
        order = list(LEGS) if i % 2 == 0 else list(reversed(LEGS))
        run: dict[str, Any] = {"order": order}
        for leg in order:
            run[leg] = await _leg(root / f"audit-{i}-{leg}", leg, count, rate,
                                  10 if smoke else 200)
        rounds.append(run)

    def per(leg: str, phase: str, key: str) -> list[float | None]:
        return [r[leg][phase][key] for r in rounds]

    def p(leg: str, phase: str, q: str) -> list[float | None]:
        return [r[leg][phase]["call_ms"][q] for r in rounds]

    def diff(a: list[float | None], b: list[float | None]) -> list[float | None]:
        return [None if x is None or y is None else round(x - y, 4) for x, y in zip(a, b,
                                                                                    strict=True)]

    summary: dict[str, Any] = {}
    for phase, unit in (("decisions", "cpu_ms_per_decision"),
                        ("proposals", "cpu_ms_per_proposal")):
        on, off = per("audit-on", phase, unit), per("audit-off", phase, unit)
        summary[phase] = {
            "cpu_ms": {"audit-on": _spread(on), "audit-off": _spread(off),
                       "difference": _spread(diff(on, off))},
            **{f"{q}_ms": {"audit-on": _spread(p("audit-on", phase, q)),
                           "audit-off": _spread(p("audit-off", phase, q)),
                           "difference": _spread(diff(p("audit-on", phase, q),
                                                      p("audit-off", phase, q)))}
               for q in ("p50", "p99")},
        }
    return {"scenario": "audit", "count": count, "rate": rate, "rounds": rounds,
            "summary": summary}
