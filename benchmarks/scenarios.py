"""The benchmark scenarios. Each returns a JSON-able dict; ``smoke=True`` makes it tiny."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.loadgen import achieved_rate, decide, run_load, start_workers, stop_workers
from benchmarks.server import (
    HOST,
    Credentials,
    ServerUnderTest,
    bench_env,
    listening_port,
    running_server,
    seed_changes,
    summary_cpu,
    wait_healthy,
)
from benchmarks.stats import summarize_ms

SAMPLE_DECISIONS = 1000  # decisions measured per latency point


async def warm_up(server: ServerUnderTest, count: int = 60) -> None:
    """Decide a few changes first so that caches and compiled statements are warm."""
    ids = await seed_changes(server, count)
    await decide(server.port, server.creds.reviewer_token, ids, rate=1000, concurrency=4)


def _pick(ids: list[str], count: int, seed: int = 7) -> list[str]:
    if count >= len(ids):
        return list(ids)
    return random.Random(seed).sample(ids, count)


async def baseline(server: ServerUnderTest, count: int, rate: float,
                   path: str = "/api/mcp/pending-changes/{id}/{verb}",
                   ids: list[str] | None = None) -> dict[str, Any]:
    """Decisions with nobody subscribed: the cost of deciding alone."""
    ids = ids if ids is not None else await seed_changes(server, count)
    meter = server.meter()
    before = meter.read()
    t0 = time.monotonic()
    decisions = await decide(server.port, server.creds.reviewer_token, ids, rate, 16, 0.5, path)
    wall = time.monotonic() - t0
    after = meter.read()
    meter.stop()
    ok = [d for d in decisions if d.status == 200]
    cpu = summary_cpu(before, after)
    return {"decisions_ok": len(ok), "achieved_rate": achieved_rate(decisions), "wall_s": wall,
            "call_ms": summarize_ms(d.returned - d.started for d in ok), "server_cpu": cpu,
            "cpu_ms_per_decision": round(cpu["cpu_s"] * 1000 / len(ok), 4) if ok else None}


def _workers_for(n: int) -> int:
    return 2 if n >= 2000 else 1


# -- 1: latency against idle-but-subscribed hub connections ------------------------------------

async def latency(root: Path, smoke: bool = False, sizes: list[int] | None = None,
                  rate: float = 200.0, transports: list[str] | None = None) -> dict[str, Any]:
    """p50/p90/p99/max of decision→event with N idle subscribed connections, per transport."""
    sizes = sizes or ([5] if smoke else [100, 1000, 5000, 10000])
    transports = transports or ["hub-ws"]
    runs = []
    for kind in transports:
        for n in sizes:
            with running_server(root / f"latency-{kind}-{n}") as server:
                await warm_up(server, 10 if smoke else 60)
                per = max(1, math.ceil((10 if smoke else SAMPLE_DECISIONS) / n)) \
                    if n < SAMPLE_DECISIONS else 1
                ids = await seed_changes(server, n * per)
                sample = _pick(ids, 10 if smoke else SAMPLE_DECISIONS)
                r = await run_load(server, kind=kind, change_ids=ids, agents=n, per_agent=per,
                                   rate=rate, decide_ids=sample, workers=_workers_for(n))
                runs.append(r)
                _progress("latency", r)
    return {"scenario": "latency", "rate": rate, "runs": runs}


# -- 2: max sustained decisions/s with 1,000 subscribers -------------------------------------

async def throughput(root: Path, smoke: bool = False, subscribers: int = 1000,
                     rates: list[float] | None = None, seconds: float = 5.0,
                     p99_limit_ms: float = 100.0) -> dict[str, Any]:
    """A rate ladder; each step decides ``rate × seconds`` changes watched by the subscribers."""
    if smoke:
        subscribers, rates, seconds = 5, [20.0], 0.5
    rates = rates or [50, 100, 150, 200, 250, 300, 400, 600, 800, 1000]
    steps = []
    best: float | None = None
    with running_server(root / "throughput") as server:
        await warm_up(server, 10 if smoke else 200)
        for rate in rates:
            total = max(subscribers, int(rate * seconds))
            per = math.ceil(total / subscribers)
            ids = await seed_changes(server, subscribers * per)
            r = await run_load(server, kind="hub-ws", change_ids=ids, agents=subscribers,
                               per_agent=per, rate=rate, decide_ids=ids[:total],
                               concurrency=32, workers=1)
            r["series"] = {}
            steps.append(r)
            _progress("throughput", r)
            p99 = r["latency_ms"]["p99"]
            sustained = (r["achieved_rate"] or 0) >= 0.95 * rate and r["missing"] == 0
            if sustained and p99 is not None and p99 < p99_limit_ms:
                best = max(best or 0.0, r["achieved_rate"])
            elif not smoke:
                break
        base = await baseline(server, 20 if smoke else 3000, 100000.0)
    return {"scenario": "throughput", "subscribers": subscribers, "p99_limit_ms": p99_limit_ms,
            "steps": steps, "max_sustained": best, "decide_only": base}


# -- 3: MCP sessions, both eras ---------------------------------------------------------------

async def mcp(root: Path, smoke: bool = False, sizes: list[int] | None = None,
              rate: float = 100.0) -> dict[str, Any]:
    sizes = sizes or ([3] if smoke else [100, 1000])
    runs = []
    for era in ("legacy", "modern"):
        for n in sizes:
            with running_server(root / f"mcp-{era}-{n}") as server:
                await warm_up(server, 10 if smoke else 60)
                # Enough watched changes for SAMPLE_DECISIONS decisions at every size.
                per = 1 if smoke else max(1, math.ceil(SAMPLE_DECISIONS / n))
                ids = await seed_changes(server, n * per)
                r = await run_load(server, kind=f"mcp-{era}", change_ids=ids, agents=n,
                                   per_agent=per, rate=rate,
                                   decide_ids=_pick(ids, SAMPLE_DECISIONS),
                                   workers=2 if n >= 500 else 1, settle_timeout=60)
                runs.append(r)
                _progress("mcp", r)
    return {"scenario": "mcp", "rate": rate, "runs": runs}


# -- 4: push against polling ------------------------------------------------------------------

async def push_vs_poll(root: Path, smoke: bool = False, agents: int = 1000,
                       rate: float = 50.0, poll_interval: float = 1.0) -> dict[str, Any]:
    """The same agents waiting, once on the hub and once polling REST every second."""
    if smoke:
        agents, rate, poll_interval = 5, 10.0, 0.2
    out: dict[str, Any] = {"scenario": "push-vs-poll", "agents": agents, "rate": rate,
                           "poll_interval_s": poll_interval}
    for kind in ("hub-ws", "poll"):
        with running_server(root / f"pvp-{kind}") as server:
            await warm_up(server, 10 if smoke else 60)
            ids = await seed_changes(server, agents)
            r = await run_load(server, kind=kind, change_ids=ids, agents=agents, rate=rate,
                               options={"poll_interval": poll_interval},
                               settle_timeout=poll_interval * 3 + 10)
            out[kind] = r
            _progress("push-vs-poll", r)
            if kind == "hub-ws":
                out["decide_only"] = await baseline(server, agents, rate)
    hub, poll, base = out["hub-ws"], out["poll"], out["decide_only"]
    base_cpu = base["cpu_ms_per_decision"] or 0.0

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 1) if a and b else None

    out["ratios"] = {
        "wire_bytes": ratio(poll["wire_bytes_per_delivered"], hub["wire_bytes_per_delivered"]),
        "cpu_total": ratio(poll["cpu_ms_per_delivered"], hub["cpu_ms_per_delivered"]),
        # None when push costs too little over deciding to measure (psutil: 10 ms ticks).
        "cpu_net_of_deciding": ratio(
            (poll["cpu_ms_per_delivered"] or 0) - base_cpu,
            max((hub["cpu_ms_per_delivered"] or 0) - base_cpu, 0.0)),
    }
    return out


# -- 5: python-socketio side by side ----------------------------------------------------------

@contextmanager
def socketio_peer(workdir: Path, creds: Credentials) -> Iterator[ServerUnderTest]:
    """The peer (benchmarks/sio_peer.py) as its own process, served like ours (same
    environment: warning-level logs; same serve code: see sio_peer.main)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "sio_peer.log"
    env = bench_env(f"sqlite:///{workdir / 'unused.db'}", "unused-" + uuid.uuid4().hex)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sio_peer", "--port", "0",
             "--db", str(workdir / "peer.db"), "--key", creds.api_key,
             "--token", creds.reviewer_token],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent)
    try:
        port = listening_port(proc, log_path)
        wait_healthy(port, proc, log_path)
        yield ServerUnderTest(proc, port, creds, "", workdir, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


async def peer_seed(server: ServerUnderTest, count: int) -> list[str]:
    from benchmarks.miniclient import MiniHttp

    ids = [str(uuid.uuid4()) for _ in range(count)]
    http = MiniHttp(HOST, server.port, {"Authorization": f"Bearer {server.creds.reviewer_token}"})
    for i in range(0, count, 5000):
        await http.json("POST", "/seed", {"ids": ids[i:i + 5000]})
    await http.close()
    return ids


PEER_PATH = "/decide/{id}/{verb}"


async def _peer_ours(workdir: Path, agents: int, rate: float, smoke: bool
                     ) -> dict[str, Any]:
    with running_server(workdir) as ours:
        await warm_up(ours, 10 if smoke else 60)
        ids = await seed_changes(ours, agents)
        loaded = await run_load(ours, kind="hub-ws", change_ids=ids, agents=agents, rate=rate)
        _progress("peer ours", loaded)
        alone = await baseline(ours, agents, rate)
    return {"ours": loaded, "ours_decide_only": alone}


async def _peer_socketio(workdir: Path, agents: int, rate: float, smoke: bool
                         ) -> dict[str, Any]:
    creds = Credentials(api_key="cola_" + uuid.uuid4().hex,
                        reviewer_token="peer-" + uuid.uuid4().hex, tenant="bench")
    with socketio_peer(workdir, creds) as sio:
        warm = await peer_seed(sio, 10 if smoke else 60)
        await decide(sio.port, creds.reviewer_token, warm, 1000, 4, 0.5, PEER_PATH)
        ids = await peer_seed(sio, agents)
        loaded = await run_load(sio, kind="sio", change_ids=ids, agents=agents, rate=rate,
                                decide_path=PEER_PATH)
        _progress("peer socketio", loaded)
        alone = await baseline(sio, agents, rate, PEER_PATH, ids=await peer_seed(sio, agents))
    return {"socketio": loaded, "socketio_decide_only": alone}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Median and range over the repeats (None where a repeat had no value)."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return {"median": None, "min": None, "max": None, "runs": values}
    mid = len(known) // 2
    median = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
    return {"median": round(median, 2), "min": known[0], "max": known[-1], "runs": values}


async def peer(root: Path, smoke: bool = False, agents: int = 1000, rate: float = 100.0,
               repeats: int = 3) -> dict[str, Any]:
    """Our hub and a minimal python-socketio server: same agents, same trigger, same rate,
    same server settings; ``repeats`` rounds, alternating which server runs first."""
    if smoke:
        agents, rate, repeats = 5, 20.0, 2
    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        # Whatever the machine does meanwhile (other work, a warming cache) should not
        # always favour the same server.
        order = ["ours", "socketio"] if i % 2 == 0 else ["socketio", "ours"]
        run: dict[str, Any] = {"order": order}
        for name in order:
            measure = _peer_ours if name == "ours" else _peer_socketio
            run.update(await measure(root / f"peer-{i}-{name}", agents, rate, smoke))
        for name in ("ours", "socketio"):
            total = run[name]["cpu_ms_per_delivered"]
            alone = run[f"{name}_decide_only"]["cpu_ms_per_decision"]
            run[name]["push_cpu_ms_per_event"] = (
                round(total - alone, 4) if total is not None and alone is not None else None)
        # Ours ÷ theirs. Net of deciding is a difference of two noisy runs on each side
        # (and psutil counts 10 ms ticks), hence its spread over the repeats.
        run["cpu_ratio_all_in"] = _ratio(run["ours"]["cpu_ms_per_delivered"],
                                         run["socketio"]["cpu_ms_per_delivered"])
        theirs_net = run["socketio"]["push_cpu_ms_per_event"]
        run["cpu_ratio_net_of_deciding"] = _ratio(
            run["ours"]["push_cpu_ms_per_event"],
            theirs_net if theirs_net is not None and theirs_net > 0 else None)
        runs.append(run)
    return {"scenario": "peer", "agents": agents, "rate": rate, "repeats": runs,
            "cpu_ratio_all_in": _spread([r["cpu_ratio_all_in"] for r in runs]),
            "cpu_ratio_net_of_deciding": _spread(
                [r["cpu_ratio_net_of_deciding"] for r in runs]),
            "push_cpu_ms_per_event": {
                name: _spread([r[name]["push_cpu_ms_per_event"] for r in runs])
                for name in ("ours", "socketio")}}


# -- 6: two instances with a Redis backplane --------------------------------------------------

async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    conn = await asyncpg.connect(host=admin.host, port=admin.port or 5432,
                                 user=admin.username, database=admin.database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_pg_database(admin_url: str) -> tuple[str, str]:
    """A fresh database: ``(url, name)``."""
    from sqlalchemy.engine import make_url

    name = f"cola_bench_{uuid.uuid4().hex[:10]}"
    await _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, name


async def redis(root: Path, smoke: bool = False, agents: int = 1000, rate: float = 100.0,
                pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                redis_url: str = "redis://127.0.0.1:6379/0") -> dict[str, Any]:
    """Agents on instance B, decisions on A (through Redis) against agents on A (local)."""
    if smoke:
        agents, rate = 5, 20.0
    db_url, db_name = await create_pg_database(pg_admin_url)
    try:
        return await _redis(root, db_url, redis_url, agents, rate, smoke)
    finally:
        await _pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


async def _redis(root: Path, db_url: str, redis_url: str, agents: int, rate: float,
                 smoke: bool) -> dict[str, Any]:
    env = {"COLAFLOW_REDIS_URL": redis_url,
           "COLAFLOW_REDIS_CHANNEL": f"colaflow:bench:{uuid.uuid4().hex[:8]}"}
    out: dict[str, Any] = {"scenario": "redis", "agents": agents, "rate": rate}
    with running_server(root / "redis", database_url=db_url, extra_env=env,
                        instances=2) as a:
        b = a.extra_instances[0]
        await warm_up(a, 10 if smoke else 60)
        await warm_up(b, 10 if smoke else 60)
        for label, agent_server in (("same_instance", a), ("other_instance", b)):
            ids = await seed_changes(a, agents)
            r = await run_load(a, kind="hub-ws", change_ids=ids, agents=agents, rate=rate,
                               agent_port=agent_server.port, decide_port=a.port)
            r["series"] = {}
            out[label] = r
            _progress(f"redis {label}", r)
    same, other = out["same_instance"]["latency_ms"], out["other_instance"]["latency_ms"]
    out["added_ms"] = {q: round(other[q] - same[q], 3) for q in ("p50", "p90", "p99")
                       if other[q] is not None and same[q] is not None}
    return out


# -- memory: idle authenticated connections --------------------------------------------------

async def memory(root: Path, smoke: bool = False, connections: int = 10000) -> dict[str, Any]:
    """RSS at 0 and at N idle, authenticated, handshaken hub connections (no subscriptions)."""
    if smoke:
        connections = 5
    with running_server(root / "memory") as server:
        await warm_up(server, 10)
        meter = server.meter()
        idle = meter.read()
        rounds: list[dict[str, Any]] = []
        _tracemalloc_mark(server)  # baseline, with BENCH_INSTRUMENT=tracemalloc
        # Two rounds: RSS that stays after the first is reused by the second, or it leaks.
        for _ in range(2):
            t0 = time.monotonic()
            pool = await start_workers("hub-ws", server.port, server.creds.api_key,
                                       [[] for _ in range(connections)],
                                       _workers_for(connections))
            try:
                ready = sum([(await w.expect("ready", 600))["ready"] for w in pool])
                connect_s = time.monotonic() - t0
                await asyncio.sleep(2.0)  # let the accept burst's garbage be collected
                full = meter.read()
                if not rounds:
                    _tracemalloc_mark(server)  # growth by file, into the server's log
                for w in pool:
                    await w.send("collect")
                    await w.expect("events", 60)
            finally:
                await stop_workers(pool)
            await asyncio.sleep(2.0)
            rounds.append({"ready": ready, "connect_s": round(connect_s, 2),
                           "rss_connected_mib": round(full.rss_bytes / 2**20, 1),
                           "rss_after_close_mib": round(meter.read().rss_bytes / 2**20, 1)})
        meter.stop()
    first = rounds[0]
    ready = first["ready"]
    per = (first["rss_connected_mib"] * 2**20 - idle.rss_bytes) / 1024 / ready if ready else None
    result = {"scenario": "memory", "connections": connections, "ready": ready,
              "connect_s": first["connect_s"],
              "rss_idle_mib": round(idle.rss_bytes / 2**20, 1),
              "rss_connected_mib": first["rss_connected_mib"],
              "rss_after_close_mib": first["rss_after_close_mib"],
              "rss_per_connection_kib": round(per, 2) if per is not None else None,
              "rounds": rounds}
    _progress("memory", result)
    return result


def _tracemalloc_mark(server: ServerUnderTest) -> None:
    if "tracemalloc" in os.environ.get("BENCH_INSTRUMENT", ""):
        os.kill(server.pid, signal.SIGUSR1)


def _progress(name: str, r: dict[str, Any]) -> None:
    brief = {k: r.get(k) for k in ("kind", "agents", "ready", "target_rate", "achieved_rate",
                                   "delivered", "missing", "cpu_ms_per_delivered",
                                   "rss_per_connection_kib", "connections")
             if r.get(k) is not None}
    lat = r.get("latency_ms")
    if lat:
        brief["p50/p99/max"] = f"{lat['p50']}/{lat['p99']}/{lat['max']}"
    print(f"[{name}] {brief}", file=sys.stderr, flush=True)


SCENARIOS = {
    "latency": latency,
    "throughput": throughput,
    "mcp": mcp,
    "push-vs-poll": push_vs_poll,
    "peer": peer,
    "redis": redis,
    "memory": memory,
}
