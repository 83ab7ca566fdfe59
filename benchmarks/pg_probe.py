"""Where PostgreSQL's own CPU goes during a served approvals run (issue 16 target 3).

``python -m benchmarks.pg_probe [--perf SECONDS] [--log-statements] [--out DIR]
[approvals options…]`` runs ``benchmarks.approvals`` (its arguments after ours; engines
``postgres`` by default) and, around each steady and burst window, on the benchmark's own
database:

- the CPU of every ``postgres`` process from ``/proc/<pid>/stat`` (user + system), grouped
  as this database's client backends (each with its last statement), other databases'
  backends, and the cluster's helpers (WAL writer, checkpointer, background writer,
  autovacuum, …);
- ``pg_stat_database`` (commits, tuples, blocks), ``pg_stat_user_tables`` (inserts,
  updates, HOT updates, scans), ``pg_stat_user_indexes`` and ``pg_stat_wal`` (cluster-wide:
  other users of the cluster add to it) deltas, per approval;
- ``--perf N``: ``perf record`` of every ``postgres`` process for N seconds of the steady
  window (``perf report`` by symbol into the output directory);
- ``--auto-explain MS``: ``auto_explain`` on the benchmark's database only (its
  ``session_preload_libraries``), every statement slower than MS logged with its plan and
  row counts; the server log's lines from the run go to ``server-log.txt``;
- ``--log-statements``: ``log_min_duration_statement = 0`` on the benchmark's database only
  (``ALTER DATABASE … SET``, before the server connects): the server log's ``parse`` /
  ``bind`` / ``execute`` lines of that database are counted per statement (is a statement
  prepared once per connection or parsed again?) and their durations summed. Logging costs
  PostgreSQL CPU itself, so do not read that run's throughput.

``pg_stat_statements`` would give this directly, but it needs ``shared_preload_libraries``
(a restart of the shared server); this probe needs none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks import approvals

CLK = os.sysconf("SC_CLK_TCK")
PG_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
STATE: dict[str, Any] = {"db": None, "url": None, "windows": [], "perf": 0, "explain": 0,
                         "log": False, "out": Path("."), "log_start": 0}


def _ticks(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _pg_pids() -> dict[int, str]:
    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "postgres":
            out[p.pid] = " ".join(p.info["cmdline"] or [])
    return out


STATS_SQL = {
    "database": "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
                " tup_updated, tup_deleted, blks_read, blks_hit FROM pg_stat_database"
                " WHERE datname = current_database()",
    "wal": "SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_buffers_full, wal_write,"
           " wal_sync FROM pg_stat_wal",
}
TABLES_SQL = ("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan,"
              " seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, n_dead_tup, n_live_tup"
              " FROM pg_stat_user_tables")
INDEXES_SQL = ("SELECT relname || '.' || indexrelname AS name, idx_scan, idx_tup_read"
               " FROM pg_stat_user_indexes")
BACKENDS_SQL = ("SELECT pid, coalesce(datname, ''), backend_type, left(query, 160)"
                " FROM pg_stat_activity")


async def _snapshot() -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]
    from sqlalchemy.engine import make_url

    u = make_url(STATE["url"])
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username,
                                 database=u.database)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        snap: dict[str, Any] = {"t": time.monotonic()}
        for k, sql in STATS_SQL.items():
            snap[k] = dict(await conn.fetchrow(sql))
        snap["tables"] = {r["relname"]: dict(r) for r in await conn.fetch(TABLES_SQL)}
        snap["indexes"] = {r["name"]: dict(r) for r in await conn.fetch(INDEXES_SQL)}
        backends = {r[0]: (r[1], r[2], r[3]) for r in await conn.fetch(BACKENDS_SQL)}
        me = conn.get_server_pid()
    finally:
        await conn.close()
    snap["cpu"] = {pid: (_ticks(pid), cmd, backends.get(pid)) for pid, cmd in
                   _pg_pids().items() if pid != me}
    return snap


def _diff(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    per = max(1, n)
    out: dict[str, Any] = {"seconds": round(b["t"] - a["t"], 2), "approvals": n}
    for k in STATS_SQL:
        out[k] = {f: round((b[k][f] - a[k][f]) / per, 3) for f in b[k]}
    out["tables_per_approval"] = {
        t: {f: round((row[f] - a["tables"].get(t, {}).get(f, 0)) / per, 3)
            for f in row if f != "relname" and row[f] != a["tables"].get(t, {}).get(f, 0)}
        for t, row in b["tables"].items()}
    out["tables_per_approval"] = {t: v for t, v in out["tables_per_approval"].items() if v}
    out["indexes_scans_per_approval"] = {
        i: round((row["idx_scan"] - a["indexes"].get(i, {}).get("idx_scan", 0)) / per, 3)
        for i, row in b["indexes"].items()
        if row["idx_scan"] != a["indexes"].get(i, {}).get("idx_scan", 0)}
    groups: dict[str, float] = defaultdict(float)
    backends = []
    for pid, (ticks, cmd, act) in b["cpu"].items():
        before = a["cpu"].get(pid, (0.0, cmd, act))[0]
        used = ticks - before
        if act and act[0] == STATE["db"] and act[1] == "client backend":
            groups["this database's backends"] += used
            backends.append({"pid": pid, "cpu_ms": round(used * 1000, 1),
                             "query": act[2]})
        elif act and act[1] == "client backend":
            groups["other databases' backends"] += used
        else:
            groups[act[1] if act else cmd.split(":", 1)[-1].strip()[:40]] += used
    out["cpu_ms_per_approval"] = {g: round(v * 1000 / per, 3) for g, v in
                                  sorted(groups.items(), key=lambda kv: -kv[1]) if v}
    out["backends"] = sorted(backends, key=lambda r: -r["cpu_ms"])
    return out


async def _perf(seconds: int, tag: str) -> None:
    pids = ",".join(str(p) for p in _pg_pids())
    data = STATE["out"] / f"perf-{tag}.data"
    proc = await asyncio.create_subprocess_exec(
        "perf", "record", "-F", "499", "-g", "-p", pids, "-o", str(data), "--", "sleep",
        str(seconds), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()
    for mode, args in (("self", ["--no-children"]), ("children", ["--children"])):
        rep = await asyncio.create_subprocess_exec(
            "perf", "report", "-i", str(data), "--stdio", "-g", "none",
            "--sort", "dso,symbol", "--percent-limit", "0.3", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        text, _ = await rep.communicate()
        (STATE["out"] / f"perf-{tag}-{mode}.txt").write_bytes(text)


def install() -> None:
    real_create = approvals.create_pg_database
    real_run_load = approvals.run_load

    async def create(admin_url: str) -> tuple[str, str]:
        url, name = await real_create(admin_url)
        STATE["db"], STATE["url"] = name, url
        if STATE["log"]:
            await approvals._pg_admin(
                admin_url, f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0')
        if STATE["explain"]:  # the plans the server's statements really ran with
            for setting in ("session_preload_libraries = 'auto_explain'",
                            f"auto_explain.log_min_duration = {STATE['explain']}",
                            "auto_explain.log_analyze = on",
                            "auto_explain.log_timing = off"):
                await approvals._pg_admin(admin_url, f'ALTER DATABASE "{name}" SET {setting}')
        return url, name

    async def run_load(*args: Any, on_ready: Any = None, **kw: Any) -> dict[str, Any]:
        marks: dict[str, Any] = {}
        tasks: list[asyncio.Task[None]] = []
        tag = f"w{len(STATE['windows'])}"

        async def ready() -> None:
            if on_ready is not None:
                await on_ready()
            marks["a"] = await _snapshot()
            if STATE["perf"] and not STATE["windows"]:
                tasks.append(asyncio.create_task(_perf(STATE["perf"], tag)))

        r: dict[str, Any] = await real_run_load(*args, on_ready=ready, **kw)
        b = await _snapshot()
        d = _diff(marks["a"], b, r["decisions_ok"])
        d["window"] = tag
        d["approvals_per_s"] = r["achieved_rate"]
        STATE["windows"].append(d)
        print(json.dumps({"pg_probe": d}, indent=1), file=sys.stderr, flush=True)
        for t in tasks:
            await t
        return r

    approvals.create_pg_database = create
    approvals.run_load = run_load


def statement_log(db: str, start: int) -> dict[str, Any]:
    """Per statement of ``db`` in the server log since byte ``start``: parse / bind /
    execute counts and summed durations."""
    pat = re.compile(r"@" + re.escape(db) + r" LOG:  duration: ([\d.]+) ms  "
                     r"(parse|bind|execute|statement)( [^:]*)?: (.*)")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    ms: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with PG_LOG.open("rb") as fh:
        fh.seek(start)
        for raw in fh:
            m = pat.search(raw.decode("utf-8", "replace"))
            if not m:
                continue
            dur, phase, text = float(m.group(1)), m.group(2), m.group(4).strip()[:200]
            counts[text][phase] += 1
            ms[text][phase] += dur
    rows = [{"sql": t, "calls": dict(c),
             "ms": {p: round(v, 1) for p, v in ms[t].items()},
             "ms_per_call": {p: round(v / c[p], 4) for p, v in ms[t].items()}}
            for t, c in counts.items()]
    rows.sort(key=lambda r: -sum(r["ms"].values()))
    return {"statements": rows}


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--perf", type=int, default=0)
    parser.add_argument("--log-statements", action="store_true")
    parser.add_argument("--auto-explain", type=float, default=0.0, metavar="MS")
    parser.add_argument("--probe-out", type=Path, default=Path("pg-probe"))
    ours, rest = parser.parse_known_args()
    STATE["perf"], STATE["log"] = ours.perf, ours.log_statements
    STATE["out"], STATE["explain"] = ours.probe_out, ours.auto_explain
    ours.probe_out.mkdir(parents=True, exist_ok=True)
    if ours.log_statements or ours.auto_explain:
        STATE["log_start"] = PG_LOG.stat().st_size
    install()
    if "--engines" not in rest:
        rest = ["--engines", "postgres", *rest]
    sys.argv = [sys.argv[0], *rest]
    rc = approvals.main()
    result: dict[str, Any] = {"windows": STATE["windows"]}
    if ours.auto_explain and STATE["db"]:
        with PG_LOG.open("rb") as fh:
            fh.seek(STATE["log_start"])
            (ours.probe_out / "server-log.txt").write_bytes(fh.read())
    if ours.log_statements and STATE["db"]:
        result["log"] = statement_log(STATE["db"], STATE["log_start"])
    (ours.probe_out / "probe.json").write_text(json.dumps(result, indent=1))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
