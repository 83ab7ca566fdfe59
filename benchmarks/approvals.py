"""Approvals with N in flight, SQLite against PostgreSQL, with the raw driver as reference.

``python -m benchmarks.approvals [--engines sqlite,postgres,postgres-2] [--approvals 3000]
[--inflight 8] [--repeats 1] [--postgres-url URL] [--redis-url URL] [--out DIR]``

Per engine: a fresh database and ``colaflow-mcp serve``; 1,000 hub WebSocket subscribers
(raw SignalR JSON, in a worker process) watch the changes; a closed-loop decider keeps
``--inflight`` approvals in flight (every decision approves, so every one executes a
``create_issue`` and writes two audit entries) until ``--approvals`` are done; then a burst
of 1,000 approvals by 16 reviewer connections at once. ``postgres-2`` is two instances on
one PostgreSQL database with a Redis backplane, the decider's lanes split between them
and the subscribers on the first. Reported: approvals/s, approve call → event (after
return) p50/p99, the approve call's own p50/p99, server CPU per approval (all instances),
and PostgreSQL's own CPU per approval (every ``postgres`` process on the machine: the
benchmark's database is the only busy one while it runs).

The reference, measured in the same run on the same PostgreSQL: asyncpg alone doing a
single-row ``UPDATE`` + ``COMMIT``, serially on one connection and with 8 concurrent
transactions on 8 connections. Writes ``approvals.json``.

``--tenants 1,8 [--split tenant,round-robin] [--pin CPUS/…]`` (engines also
``postgres-redis``: one instance with the backplane): the changes, subscribers and reviewers
spread over N tenants (each its own project, agent key and reviewer token); with two
instances, decisions go by tenant (a sticky or tenant-sharded deployment) or by lane
(round-robin); every (N, engine, split) in each round, alternating the order. Adds per
run the CPU of every component over the steady window (each instance, PostgreSQL, Redis,
the load generator, the subscribers' worker) and the machine's busy cores (``/proc/stat``).
"""


from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.loadgen import decide, run_load
from benchmarks.scenarios import _pg_admin, create_pg_database, warm_up
from benchmarks.server import raise_fd_limit, running_server, seed_changes
from benchmarks.tenants import (
    CpuWindow,
    TenantLoad,
    pin_instances,
    seed_tenants,
    tenant_decider,
)

HERE = Path(__file__).resolve().parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"
SUBSCRIBERS = 1000
PROFILE: dict[str, Any] = {"seconds": 0, "path": ""}  # --py-spy


def _cpu_of(pids: list[int], system_only: bool = False) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.system if system_only else t.user + t.system
        except psutil.Error:
            pass
    return total


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process alive now (backends and helpers)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "postgres":
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


async def asyncpg_reference(db_url: str, serial: int = 2000, concurrent: int = 8,
                            each: int = 500) -> dict[str, Any]:
    """Single-row UPDATE + COMMIT with asyncpg alone: serially, and ``concurrent`` at once."""
    import asyncpg  # type: ignore[import-untyped,unused-ignore]
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    kw = {"host": u.host, "port": u.port or 5432, "user": u.username, "database": u.database}
    conns = [await asyncpg.connect(**kw) for _ in range(concurrent)]
    try:
        await conns[0].execute(
            "CREATE TABLE IF NOT EXISTS bench_ref (id int PRIMARY KEY, n int NOT NULL)")
        await conns[0].execute(
            "INSERT INTO bench_ref SELECT g, 0 FROM generate_series(1, 1000) g "
            "ON CONFLICT DO NOTHING")

        async def txn(conn: Any, row: int) -> None:
            async with conn.transaction():
                await conn.execute("UPDATE bench_ref SET n = n + 1 WHERE id = $1", row)

        for i in range(100):  # warm: prepared statement, caches
            await txn(conns[0], i % 1000 + 1)
        t0 = time.perf_counter()
        for i in range(serial):
            await txn(conns[0], i % 1000 + 1)
        serial_s = time.perf_counter() - t0

        async def lane(k: int) -> None:
            for i in range(each):  # each lane its own rows: no lock waits between lanes
                await txn(conns[k], (k * 100 + i % 100) % 1000 + 1)

        t0 = time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(concurrent)))
        conc_s = time.perf_counter() - t0
    finally:
        for c in conns:
            await c.close()
    return {"serial_per_s": round(serial / serial_s, 1),
            "serial_ms": round(serial_s * 1000 / serial, 3),
            f"concurrent{concurrent}_per_s": round(concurrent * each / conc_s, 1),
            "concurrent": concurrent}


def _row(r: dict[str, Any]) -> dict[str, Any]:
    lat, call = r["latency_ms"], r["call_ms"]
    return {"approvals_per_s": r["achieved_rate"], "ok": r["decisions_ok"],
            "missing": r["missing"], "duplicates": r["duplicates"],
            "event_after_return_ms": {"p50": lat["p50"], "p99": lat["p99"], "max": lat["max"]},
            "call_ms": {"p50": call["p50"], "p99": call["p99"]},
            "loadavg_1m": r["loadavg_1m"]}


async def measured(server: Any, ids: list[str], per: int, inflight: int,
                   pg: bool) -> dict[str, Any]:
    """One closed-loop run (``inflight`` lanes, no pacing); CPU of every instance and PG."""
    servers = [server, *server.extra_instances]
    pids = [s.pid for s in servers]
    marks: dict[str, float] = {}

    spies: list[asyncio.subprocess.Process] = []

    async def ready() -> None:
        marks["cpu0"] = _cpu_of(pids)
        marks["sys0"] = _cpu_of(pids, system_only=True)
        marks["pg0"] = postgres_cpu() if pg else 0.0
        if PROFILE["seconds"] and not spies:  # py-spy on the first instance, steady state
            spies.append(await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                str(pids[0]), "--format", "raw", "--rate", "200", "--duration",
                str(PROFILE["seconds"]), "--output", str(PROFILE["path"]), "--gil",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))

    r = await run_load(server, kind="hub-ws", change_ids=ids, agents=SUBSCRIBERS,
                       per_agent=per, rate=1e9, concurrency=inflight, approve_share=1.0,
                       decide_port=[s.port for s in servers], on_ready=ready)
    if spies:
        await spies[0].wait()
        PROFILE["seconds"] = 0  # the steady phase only
    cpu = _cpu_of(pids) - marks["cpu0"]
    sys_cpu = _cpu_of(pids, system_only=True) - marks["sys0"]
    pg_cpu = postgres_cpu() - marks["pg0"] if pg else None
    out = _row(r)
    ok = max(1, r["decisions_ok"])
    out["server_cpu_ms_per_approval"] = round(cpu * 1000 / ok, 3)
    out["server_sys_ms_per_approval"] = round(sys_cpu * 1000 / ok, 3)  # kernel share
    out["server_cpu_cores"] = round(cpu / r["decide_s"], 2) if r["decide_s"] else None
    if pg_cpu is not None:
        out["postgres_cpu_ms_per_approval"] = round(pg_cpu * 1000 / ok, 3)
    return out


async def run_engine(root: Path, engine: str, approvals: int, inflight: int,
                     pg_admin: str, redis_url: str, burst: bool = True,
                     reference: bool = True) -> dict[str, Any]:
    pg = engine.startswith("postgres")
    instances = 2 if engine == "postgres-2" else 1
    db_name = None
    db_url = None
    env: dict[str, str] = {}
    if pg:
        db_url, db_name = await create_pg_database(pg_admin)
    if instances > 1:
        env = {"COLAFLOW_REDIS_URL": redis_url,
               "COLAFLOW_REDIS_CHANNEL": f"colaflow:bench:{uuid.uuid4().hex[:8]}"}
    out: dict[str, Any] = {"engine": engine, "instances": instances,
                           "loadavg_before": os.getloadavg()}
    try:
        if pg and reference:
            assert db_url is not None
            out["asyncpg_reference"] = await asyncpg_reference(db_url)
        with running_server(root / engine, database_url=db_url, extra_env=env,
                            instances=instances) as server:
            for s in (server, *server.extra_instances):
                await warm_up(s, 200)
            per = math.ceil(approvals / SUBSCRIBERS)
            ids = await seed_changes(server, SUBSCRIBERS * per)
            out["steady"] = await measured(server, ids[:approvals], per, inflight, pg)
            out["steady"]["inflight"] = inflight
            if burst:
                ids = await seed_changes(server, SUBSCRIBERS)
                out["burst"] = await measured(server, ids, 1, 16, pg)
                out["burst"]["inflight"] = 16
    finally:
        if db_name is not None:
            await _pg_admin(pg_admin, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps({engine: {k: out[k] for k in ("steady", "burst") if k in out},
                      "ref": out.get("asyncpg_reference")}), file=sys.stderr)
    return out


async def measured_tenants(server: Any, load: TenantLoad, per: int, inflight: int,
                           split: str, db_name: str | None) -> dict[str, Any]:
    """One closed-loop run over the load's tenants; CPU of every component, per instance."""
    servers = [server, *server.extra_instances]
    window = CpuWindow([s.pid for s in servers], db_name)
    stages = os.environ.get("BENCH_STAGES_OUT")
    if stages:  # benchmarks/instrumented.py's ``stages``: counters at the window's edges
        def signal_all() -> None:
            for s in servers:
                os.kill(s.pid, signal.SIGUSR2)
        window.edge_hooks.append((signal_all, signal_all))
    spies: list[subprocess.Popen[bytes]] = []
    if PROFILE["seconds"]:  # py-spy on every instance over the whole steady window
        def spy() -> None:
            for i, s in enumerate(servers):
                spies.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                     str(s.pid), "--format", "raw", "--rate", "250", "--gil", "--nonblocking",
                     "--output",
                     f"{PROFILE['path']}".replace(".txt", f"-{split}-i{i}-of"
                                                  f"{len(servers)}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def unspy() -> None:
            for p in spies:
                p.send_signal(signal.SIGINT)
        window.edge_hooks.append((spy, unspy))
    perf_out = os.environ.get("BENCH_PERF_OUT")
    perfs: list[subprocess.Popen[bytes]] = []
    if perf_out:  # ``perf record`` of every instance over the steady window
        def perf() -> None:
            for i, s in enumerate(servers):
                perfs.append(subprocess.Popen(
                    ["perf", "record", "-F", "499", "-p", str(s.pid), "-o",
                     f"{perf_out}-{split}-i{i}-of{len(servers)}.data"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def unperf() -> None:
            for p in perfs:
                p.send_signal(signal.SIGINT)
        window.edge_hooks.append((perf, unperf))
    counts: dict[int, int] = {}
    decider = tenant_decider([s.port for s in servers], load, inflight, split, window, counts)
    r = await run_load(server, kind="hub-ws", change_ids=load.change_ids,
                       agents=len(load.assignments), per_agent=per, rate=1e9,
                       concurrency=inflight, approve_share=1.0, api_keys=load.api_keys,
                       decider=decider)
    for p in [*spies, *perfs]:
        p.wait(timeout=60)
    out = _row(r)
    if stages:
        out["stages"] = [_stages_of(f"{stages}.{s.pid}") for s in servers]
    out["inflight"] = inflight
    out["decisions_per_instance"] = [counts.get(s.port, 0) for s in servers]
    out["cpu"] = window.result(r["decisions_ok"])
    comp = out["cpu"]["components"]
    out["server_cpu_ms_per_approval"] = round(sum(
        comp.get(f"instance{i}", {}).get("ms_per_approval", 0.0)
        for i in range(len(servers))), 3)
    if db_name is not None:
        out["postgres_cpu_ms_per_approval"] = round(sum(
            comp.get(g, {}).get("ms_per_approval", 0.0)
            for g in ("postgres_backends", "postgres_shared")), 3)
    return out


def _stages_of(path: str) -> dict[str, float]:
    """One instance's stage counters over the window: the last two lines' difference."""
    lines = [json.loads(x) for x in Path(path).read_text().splitlines()]
    a, b = lines[-2], lines[-1]
    return {k: round(v - a.get(k, 0), 3) for k, v in sorted(b.items())}


async def run_tenants(root: Path, engine: str, tenants: int, split: str,
                      args: argparse.Namespace, pin: str = "-") -> dict[str, Any]:
    """One (engine, tenants, split, pin) configuration on a fresh database.

    ``postgres-redis``: one instance with the Redis backplane (what the backplane costs).
    """
    pg = engine.startswith("postgres")
    instances = 2 if engine == "postgres-2" else 1
    db_url = db_name = None
    env: dict[str, str] = {}
    if pg:
        db_url, db_name = await create_pg_database(args.postgres_url)
    if instances > 1 or engine == "postgres-redis":
        env = {"COLAFLOW_REDIS_URL": args.redis_url,
               "COLAFLOW_REDIS_CHANNEL": f"colaflow:bench:{uuid.uuid4().hex[:8]}"}
    out: dict[str, Any] = {"engine": engine, "instances": instances, "tenants": tenants,
                           "split": split if instances > 1 else None, "pin": pin,
                           "loadavg_before": os.getloadavg()}
    try:
        if pg and args.reference:
            assert db_url is not None
            out["asyncpg_reference"] = await asyncpg_reference(db_url)
        with running_server(root, database_url=db_url, extra_env=env, instances=instances,
                            tenants=tenants) as server:
            if pin != "-":
                out["pinned_to_cpu"] = pin_instances(
                    [s.pid for s in (server, *server.extra_instances)],
                    [int(c) for c in pin.split(",")])
            for s in (server, *server.extra_instances):
                await warm_up(s, 20 if args.smoke else 200)
                for creds in server.tenants[1:]:  # each tenant's first decisions, too
                    ids = await seed_changes(server, 4 if args.smoke else 10, creds)
                    await decide(s.port, creds.reviewer_token, ids, rate=1000, concurrency=2)
            per = math.ceil(args.approvals / SUBSCRIBERS)
            load = await seed_tenants(server, SUBSCRIBERS, per)
            out["steady"] = await measured_tenants(server, load, per, args.inflight, split,
                                                   db_name)
            if args.burst:
                load = await seed_tenants(server, SUBSCRIBERS, 1)
                out["burst"] = await measured_tenants(server, load, 1, 16, split, db_name)
    finally:
        if db_name is not None:
            await _pg_admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    out["loadavg_after"] = os.getloadavg()
    steady = out["steady"]
    print(json.dumps({"run": _label(engine, tenants, out["split"], pin),
                      "per_s": steady["approvals_per_s"],
                      "per_instance": steady["decisions_per_instance"],
                      "busy_cores": steady["cpu"]["machine"]["busy_cores"],
                      "cores": {g: c["cores"] for g, c in
                                steady["cpu"]["components"].items()},
                      "load": steady["loadavg_1m"]}), file=sys.stderr, flush=True)
    return out


def _label(engine: str, tenants: int, split: str | None, pin: str = "-") -> str:
    return (f"{engine} t{tenants}" + (f" {split}" if split else "")
            + (f" pin{pin}" if pin != "-" else ""))


async def tenants_main(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every (tenants, engine, split) per round; odd rounds run them in reverse order."""
    configs: list[tuple[str, int, str, str]] = []
    for pin in args.pin.split("/"):
        configs += [(e, n, s, pin) for e, n, s in _configs(args)]
    rounds = []
    for i in range(args.repeats):
        order = configs if i % 2 == 0 else list(reversed(configs))
        runs = {}
        for k, (engine, n, split, pin) in enumerate(order):
            r = await run_tenants(root / f"round{i}-{k}", engine, n, split, args, pin)
            runs[_label(engine, n, r["split"], pin)] = r
        rounds.append(runs)
    return {"scenario": "approvals-tenants", "subscribers": SUBSCRIBERS,
            "approvals": args.approvals, "inflight": args.inflight, "rounds": rounds}


def _configs(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    configs: list[tuple[str, int, str]] = []
    for n in (int(v) for v in args.tenants.split(",")):
        for engine in args.engines.split(","):
            splits = args.split.split(",") if engine == "postgres-2" else ["tenant"]
            # One tenant "by tenant" is one instance with an idle twin: not worth a run.
            configs += [(engine, n, s) for s in splits
                        if not (engine == "postgres-2" and n == 1 and s == "tenant")]
    return configs


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    if args.tenants:
        return await tenants_main(args, root)
    engines = args.engines.split(",")
    rounds = []
    for i in range(args.repeats):
        order = engines if i % 2 == 0 else list(reversed(engines))
        rounds.append({e: await run_engine(root / f"round{i}", e, args.approvals,
                                           args.inflight, args.postgres_url, args.redis_url,
                                           burst=args.burst, reference=args.reference)
                       for e in order})
    return {"scenario": "approvals", "subscribers": SUBSCRIBERS, "approvals": args.approvals,
            "inflight": args.inflight, "rounds": rounds}


def main() -> int:
    global SUBSCRIBERS
    parser = argparse.ArgumentParser(prog="python -m benchmarks.approvals",
                                      description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--approvals", type=int, default=3000)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--postgres-url", default=PG_ADMIN)
    parser.add_argument("--redis-url", default=REDIS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "approvals")
    parser.add_argument("--name", default="approvals")
    parser.add_argument("--py-spy", type=int, default=0, metavar="SECONDS",
                        help="profile the (first) server for SECONDS of the steady run "
                             "(one engine): writes <name>-py-spy.txt (collapsed stacks)")
    parser.add_argument("--tenants", metavar="N[,N…]",
                        help="spread changes, subscribers and reviewers over N tenants; "
                             "adds per-component CPU and the machine's busy cores")
    parser.add_argument("--split", default="tenant,round-robin",
                        help="with --tenants and postgres-2: how decisions go to the "
                             "instances, tenant (sticky) and/or round-robin (by lane)")
    parser.add_argument("--pin", default="-", metavar="CPUS[/CPUS…]",
                        help="with --tenants: pin instance i to CPU i mod len(CPUS) "
                             "(e.g. 1 or 0,1; - for none); several variants separated "
                             "by / multiply the runs")
    parser.add_argument("--subscribers", type=int, default=SUBSCRIBERS)
    parser.add_argument("--no-burst", dest="burst", action="store_false",
                        help="skip the burst of 16")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the asyncpg reference")
    parser.add_argument("--smoke", action="store_true",
                        help="with --tenants: a handful of subscribers and approvals")
    args = parser.parse_args()
    SUBSCRIBERS = args.subscribers
    if args.smoke:
        SUBSCRIBERS = 6
        args.approvals, args.burst, args.reference = 12, False, False
    if args.py_spy:
        args.out.mkdir(parents=True, exist_ok=True)
        PROFILE.update(seconds=args.py_spy, path=args.out / f"{args.name}-py-spy.txt")
    raise_fd_limit()
    t0 = time.monotonic()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="colaflow-approvals-") as tmp:
        result = asyncio.run(main_async(args, Path(tmp)))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load,
                         "loadavg_after": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
