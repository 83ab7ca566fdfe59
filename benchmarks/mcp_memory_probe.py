"""Where an idle modern listener's RSS goes, step by step (issue 14 target 3's fixed part).

``python -m benchmarks.mcp_memory_probe --steps 1,10,100,1000 --out DIR``: one
``colaflow-mcp serve`` (``BENCH_INSTRUMENT=mem-probe``), the same warm-up and seeding as
``mcp-memory``, then raw modern listeners added in steps (1, then up to 10, 100, …); after
each step has settled the server writes one ``mem-probe`` line (RSS, anonymous RSS, glibc's
``mallinfo2``, pymalloc's arenas, threads, modules, the collector's counts). ``--collect``
makes each line also read after ``gc.collect()`` and ``malloc_trim(0)`` (which changes what
the next step starts from). ``--warm-listens K`` opens and closes K listeners before the
idle line (the baseline after an MCP warm-up); ``--concurrency C``: listens connecting at
once per worker (64, as in ``mcp-memory``). ``--env K=V`` passes environment to the
server (e.g. ``MALLOC_ARENA_MAX=2``). Prints a table of deltas from the idle line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import start_workers, stop_workers
from benchmarks.scenarios import warm_up
from benchmarks.server import raise_fd_limit, running_server, seed_changes


def _lines(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


async def _mark(pid: int, out: Path, label: str, settle: float) -> dict[str, Any]:
    await asyncio.sleep(settle)
    lines = _lines(out)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _lines(out)
        if len(now) > len(lines):
            line: dict[str, Any] = json.loads(now[-1])
            line["label"] = label
            return line
        await asyncio.sleep(0.1)
    raise TimeoutError("no mem-probe line")


async def probe(root: Path, steps: list[int], settle: float, collect: bool, warm_listens: int,
                env: dict[str, str], collect_last: bool = False, concurrency: int = 64
                ) -> list[dict[str, Any]]:
    out = root / "memprobe.jsonl"
    extra = {"COLAFLOW_MCP_MAX_SESSIONS": str(max(steps) + warm_listens + 100),
             "BENCH_INSTRUMENT": "mem-probe", "BENCH_MEMPROBE_OUT": str(out),
             "BENCH_MEMPROBE_COLLECT": "1" if collect else "0", **env}
    marks = []
    with running_server(root / "server", extra_env=extra) as server:
        await warm_up(server, 10)
        ids = await seed_changes(server, max(steps) + warm_listens)
        if warm_listens:
            pool = await start_workers("mcp-modern-raw", server.port, server.creds.api_key,
                                       [[cid] for cid in ids[-warm_listens:]], 1)
            for w in pool:
                await w.expect("ready", 600)
            await stop_workers(pool)
        marks.append(await _mark(server.pid, out, "idle", 1.0 + settle))
        pools = []
        held = 0
        try:
            for n in steps:
                share = [[cid] for cid in ids[held:n]]
                pool = await start_workers("mcp-modern-raw", server.port, server.creds.api_key,
                                           share, 2 if len(share) >= 2000 else 1,
                                           connect_concurrency=concurrency)
                pools.extend(pool)
                ready = sum([(await w.expect("ready", 1800))["ready"] for w in pool])
                held = n
                if collect_last and n == steps[-1]:
                    _flag(Path(f"{out}.collect"))
                mark = await _mark(server.pid, out, f"{n}", settle)
                mark["ready_in_step"] = ready
                marks.append(mark)
        finally:
            await stop_workers(pools)
    return marks


def _flag(path: Path) -> None:
    path.touch()


def _row(label: str, base: dict[str, Any], cur: dict[str, Any], n: int) -> str:
    def d(key: str, sub: str | None = None) -> float:
        a, b = (base[key], cur[key]) if sub is None else (base[key][sub], cur[key][sub])
        return (b - a) / 1024

    per = f"{d('VmRSS') * 1024 / n:7.2f}" if n else "      -"
    return (f"{label:>16} RSS {cur['VmRSS'] / 1024:7.1f} MiB  d {d('VmRSS'):6.2f}  "
            f"anon d {d('RssAnon'):6.2f}  per {per} KiB  malloc used d "
            f"{d('malloc', 'uordblks'):6.2f} free d {d('malloc', 'fordblks'):6.2f} "
            f"mmap d {d('malloc', 'hblkhd'):6.2f}  pymalloc arenas "
            f"{cur.get('pymalloc_arenas')} used d "
            f"{(cur.get('pymalloc_used_kib', 0) - base.get('pymalloc_used_kib', 0)) / 1024:6.2f}"
            f"  sqlite d {(cur.get('sqlite_kib', 0) - base.get('sqlite_kib', 0)) / 1024:5.2f}"
            f"  thr {cur['Threads']} mods {cur['modules']} gc {cur['gc_count']}")


def report(marks: list[dict[str, Any]]) -> None:
    base = marks[0]["before"]
    for m in marks:
        n = 0 if m["label"] == "idle" else int(m["label"])
        print(_row(m["label"], base, m["before"], n))
        for key in ("after_collect", "after_trim"):
            if key in m:
                print(_row(f"{m['label']} {key[6:]}", base, m[key], n))
        if "collected" in m:
            print(f"{'':>16} gc.collect() found {m['collected']} unreachable; by type "
                  "(count, sys.getsizeof KiB):")
            for kind, (count, size) in m.get("garbage", [])[:25]:
                print(f"{'':>20} {count:7d} {size / 1024:8.1f}  {kind}")
            for ref in m.get("referrers", []):
                print(f"{'':>20} referrer: {ref}")
    idle_mods = set(marks[0].get("modules_loaded", []))
    for m in marks[1:]:
        if "modules_loaded" not in m:
            continue
        new = sorted(set(m["modules_loaded"]) - idle_mods)
        print(f"modules new at {m['label']}: {len(new)} {' '.join(new[:80])}")
        idle_mods |= set(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mcp_memory_probe",
                                     description=__doc__)
    parser.add_argument("--steps", default="1,10,100,1000")
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--collect-last", action="store_true",
                        help="collect only at the last step (the others passive)")
    parser.add_argument("--warm-listens", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="listens connecting at once per worker (mcp-memory's: 64)")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("mcp-memory-probe"))
    parser.add_argument("--report", type=Path, help="only print the table of a marks.json")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads(args.report.read_text()))
        return 0
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(kv.split("=", 1) for kv in args.env)
    marks = asyncio.run(probe(args.out, [int(s) for s in args.steps.split(",")], args.settle,
                              args.collect, args.warm_listens, env, args.collect_last,
                              args.concurrency))
    report(marks)
    (args.out / "marks.json").write_text(json.dumps(marks, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
