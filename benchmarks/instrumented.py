"""`colaflow-mcp` with measuring instruments or candidate fixes, for the bottleneck experiments.

The benchmarks start this instead of ``colaflow-mcp`` when ``BENCH_INSTRUMENT`` is set to
a comma-separated list of:

- ``gc-log``: log every garbage-collection pause over 5 ms (``GCPAUSE t=… gen=… ms=…``,
  ``t`` is ``time.monotonic()``, comparable with a result's ``phase_monotonic``);
- ``gc-total``: the running total of time spent in garbage collection per generation,
  written at most every 2 s (``GCTOTAL t=… gen=… collections=… ms=…``; uvicorn ends the
  process by its signal, so there is no exit hook to report from);
- ``gc-tune``: ``gc.set_threshold(50_000, 20, 100)`` (candidate fix for the pauses);
- ``tracemalloc``: on SIGUSR1, the first time take a snapshot, later print the growth
  since it by file and by line (``TM …`` lines);
- ``group-split``: a PostgreSQL decision group's wall time split (``SPLIT …`` lines, see
  ``_group_split``);
- ``stages``: per-stage counters of one instance (decision groups and their members,
  backplane batches published, messages received / own skipped / decoded, notifier
  dispatches and deliveries, sweep and reconcile passes with their wall time, the
  process's CPU and context switches), appended as one JSON line to
  ``$BENCH_STAGES_OUT.<pid>`` on every SIGUSR2 (``benchmarks.approvals --tenants`` sends
  it at the steady window's edges when ``BENCH_STAGES_OUT`` is set);
- ``tail-trace``: where a slow delivery's time went (RESULTS, "The tail at 10,000
  connections"): every garbage collection (start, generation, ms), event-loop lag over
  0.25 ms (a ``call_later`` probe every 2 ms: when it ran late and by how much) and every
  hub timer slice (start, connections, pings queued, ms), one line each (``TT …``,
  ``time.monotonic()``) to the file ``BENCH_TRACE_OUT`` names (default: the log);
- ``mem-probe``: on SIGUSR1 append one JSON line of where the process's memory is to
  ``$BENCH_MEMPROBE_OUT`` (RSS and anonymous RSS, glibc ``mallinfo2``, pymalloc's arenas
  from ``sys._debugmallocstats``, threads, modules loaded, the collector's counts); with
  ``BENCH_MEMPROBE_COLLECT=1`` (or while ``$BENCH_MEMPROBE_OUT.collect`` exists) then also
  the unreachable objects by type (with ``BENCH_MEMPROBE_WHO=<type>``, what refers to the
  first of that type), and the state after ``gc.collect()`` and after
  ``malloc_trim(0)`` (``benchmarks.mcp_memory_probe``);
- ``audit-off``: proposals and decisions tell no recorder (no audit entries): the
  "before" leg of the ``audit`` scenario, never a way to run the product.

(The ``publisher-off-path`` experiment became the product's behaviour in 553659c, and
``serve`` now sets the ``gc-tune`` thresholds itself.)

Lines go to the server's log (``server0.log`` in the scenario's work folder). Example:
``BENCH_INSTRUMENT=gc-log .venv/bin/python -m benchmarks latency --sizes 10000``.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any


def _gc_log() -> None:
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        if pause > 0.005:
            sys.stderr.write(f"GCPAUSE t={time.monotonic():.3f} gen={info['generation']} "
                             f"ms={pause * 1000:.1f} collected={info['collected']}\n")
            sys.stderr.flush()

    gc.callbacks.append(callback)


def _gc_total() -> None:
    started = [0.0, time.monotonic()]
    totals: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        total = totals[info["generation"]]
        total[0] += 1
        total[1] += time.perf_counter() - started[0]
        if time.monotonic() - started[1] > 2.0:
            started[1] = time.monotonic()
            for gen, (count, seconds) in totals.items():
                sys.stderr.write(f"GCTOTAL t={started[1]:.1f} gen={gen} "
                                 f"collections={count:.0f} ms={seconds * 1000:.1f}\n")
            sys.stderr.flush()

    gc.callbacks.append(callback)


def _tracemalloc() -> None:
    import tracemalloc

    tracemalloc.start(1)
    baseline: list[tracemalloc.Snapshot] = []

    def dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        if not baseline:
            baseline.append(snapshot)
            sys.stderr.write("TM baseline\n")
            return
        stats = snapshot.compare_to(baseline[0], "filename")
        total = sum(s.size_diff for s in stats)
        sys.stderr.write(f"TM total growth {total / 1024:.0f} KiB\n")
        for s in stats[:25]:
            sys.stderr.write(f"TM {s.size_diff / 1024:10.0f} KiB {s.count_diff:8d} blocks "
                             f"{s.traceback[0].filename}\n")
        for s in snapshot.compare_to(baseline[0], "lineno")[:40]:
            frame = s.traceback[0]
            sys.stderr.write(f"TM line {s.size_diff / 1024:10.1f} KiB {s.count_diff:8d} blocks "
                             f"{frame.filename}:{frame.lineno}\n")
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, dump)


def _gc_tune() -> None:
    gc.set_threshold(50_000, 20, 100)


def _tail_trace() -> None:
    import asyncio

    from colaflow_mcp.hub import server as hub_server

    path = os.environ.get("BENCH_TRACE_OUT")
    out = open(path, "a", buffering=1) if path else sys.stderr  # noqa: SIM115
    mono, perf = time.monotonic, time.perf_counter
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0], started[1] = mono(), perf()
            return
        out.write(f"TT gc t={started[0]:.6f} gen={info['generation']} "
                  f"ms={(perf() - started[1]) * 1000:.3f} collected={info['collected']}\n")

    gc.callbacks.append(on_gc)

    def probe(due: float) -> None:
        now = mono()
        if now - due > 0.00025:
            out.write(f"TT lag t={due:.6f} ms={(now - due) * 1000:.3f}\n")
        asyncio.get_running_loop().call_later(0.002, probe, now + 0.002)

    original_tick = hub_server.HubServer.tick
    original_run_timers = hub_server.HubServer.run_timers

    def tick(self: Any, conns: list[Any], now: float) -> None:
        sent = [c.last_sent for c in conns]
        t0, p0 = mono(), perf()
        original_tick(self, conns, now)
        ms = (perf() - p0) * 1000
        pinged = sum(1 for c, s in zip(conns, sent, strict=True) if c.last_sent != s)
        out.write(f"TT tick t={t0:.6f} conns={len(conns)} pinged={pinged} ms={ms:.3f}\n")

    async def run_timers(self: Any) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.002, probe, mono() + 0.002)
        await original_run_timers(self)

    hub_server.HubServer.tick = tick  # type: ignore[method-assign]
    hub_server.HubServer.run_timers = run_timers  # type: ignore[method-assign]


def _audit_off() -> None:
    from colaflow_mcp.domain.changes import ChangeService

    original = ChangeService.__init__

    def init(self: ChangeService, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.recorders = ()

    ChangeService.__init__ = init  # type: ignore[method-assign]


def _group_split() -> None:
    """Where a decision group's wall time goes on PostgreSQL (see RESULTS, "PostgreSQL
    decision groups off the event loop"): awaits inside the transaction function (driver
    call → result back in the greenlet), the Python between them, BEGIN/COMMIT outside,
    the lane's hand-off gap (one group's end → the next group's start), and the event
    loop's call_soon latency sampled every 5 ms. Lines ``SPLIT …`` every 2 s, to the log
    and appended to the file ``BENCH_SPLIT_OUT`` names, if set."""
    import asyncio
    import contextvars
    import statistics

    import greenlet
    import sqlalchemy.connectors.asyncio as sa_connectors
    import sqlalchemy.dialects.postgresql.asyncpg as sa_asyncpg

    from colaflow_mcp.store import engine as store_engine
    from colaflow_mcp.store import groups, native

    now = time.perf_counter
    deciding: contextvars.ContextVar[bool] = contextvars.ContextVar("deciding", default=False)
    st: dict[str, Any] = {"in": {}, "n": 0, "wall": [], "awaited": [],
                          "py": [], "outside": [], "gap": [], "lag": [], "size": [],
                          "handoff": {}, "t": now(), "probe": False,
                          "queue": [], "run": [], "each": [], "cycle": [],
                          "started": {}}

    class _Timed(groups._Member):  # type: ignore[type-arg,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.t_enq = now()

    groups._Member = _Timed  # type: ignore[misc]

    def timed(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def await_(awaitable: Any) -> Any:
            mine = st["in"].get(greenlet.getcurrent())
            if mine is None:  # another task's session
                return original(awaitable)
            t0 = now()
            try:
                return original(awaitable)
            finally:
                mine.append(now() - t0)
        return await_

    sa_asyncpg.await_ = timed(sa_asyncpg.await_)  # type: ignore[attr-defined]
    sa_connectors.await_ = timed(sa_connectors.await_)  # type: ignore[attr-defined]
    native.await_only = timed(native.await_only)  # type: ignore[attr-defined]

    def probe() -> None:
        loop = asyncio.get_running_loop()
        t0 = now()
        loop.call_soon(lambda: st["lag"].append(now() - t0))
        loop.call_later(0.005, probe)

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0.0

    def report() -> None:
        if now() - st["t"] < 2.0 or not st["run"]:
            return
        st["t"] = now()
        def m(k: str) -> str:
            xs = st[k]
            return f"{k}_mean={statistics.fmean(xs or [0.0]) * 1000:.3f} {k}_p90={pct(xs, 0.9):.3f}"
        line = (
            f"SPLIT t={time.monotonic():.1f} groups={len(st['run'])} "
            f"members={sum(st['size'])} "
            f"awaits_per_group={st['n'] / max(1, len(st['wall'])):.2f} "
            + " ".join(m(k) for k in ("wall", "awaited", "py", "outside", "gap", "lag",
                                      "queue", "run", "cycle"))
            + f" lag_n={len(st['lag'])} each_await_mean="
            + ",".join(f"{statistics.fmean(xs) * 1000:.3f}" for xs in zip(*[
                e for e in st["each"] if len(e) == max(map(len, st["each"]), default=0)],
                strict=True))
            + "\n")
        sys.stderr.write(line)
        sys.stderr.flush()
        if os.environ.get("BENCH_SPLIT_OUT"):  # the server's log goes with its work folder
            with open(os.environ["BENCH_SPLIT_OUT"], "a") as f:
                f.write(line)
        for k in ("wall", "awaited", "py", "outside", "gap", "lag", "size", "queue", "run",
                  "each", "cycle"):
            st[k] = []
        st["n"] = 0

    original_run = groups.TransactionGroups._run
    original_transact = store_engine.Database._transact_async

    async def _run(self: Any, key: str, batch: list[Any], *more: Any) -> None:
        if not st["probe"]:
            st["probe"] = True
            asyncio.get_running_loop().call_later(0.005, probe)
        decisions = getattr(self.body, "__name__", "") == "_decide_group"
        t_hand = st["handoff"].pop(key, None) if decisions else None
        if t_hand is not None:
            st["gap"].append(now() - t_hand)
        token = deciding.set(decisions)
        t_run = now()
        if decisions:  # start to start: a key's groups per second = 1 / cycle
            t_prev = st["started"].get(key)
            if t_prev is not None:
                st["cycle"].append(t_run - t_prev)
            st["started"][key] = t_run
        try:
            await original_run(self, key, batch, *more)
        finally:
            deciding.reset(token)
        if decisions:
            st["run"].append(now() - t_run)
            st["queue"].extend(t_run - getattr(m, "t_enq", t_run) for m in batch)
            st["size"].append(len(batch))
            st["handoff"][key] = now()
            report()

    async def _transact_async(self: Any, fn: Callable[[Any], Any], *more: Any) -> Any:
        if not deciding.get():
            return await original_transact(self, fn, *more)
        marks: dict[str, float] = {}

        awaits: list[float] = []

        def wrapped(s: Any) -> Any:
            st["in"][greenlet.getcurrent()] = awaits
            marks["f0"] = now()
            try:
                return fn(s)
            finally:
                marks["f1"] = now()
                st["in"].pop(greenlet.getcurrent(), None)
        t0 = now()
        value = await original_transact(self, wrapped, *more)
        t1 = now()
        if "f1" in marks:
            inside = marks["f1"] - marks["f0"]
            aw = sum(awaits)
            st["wall"].append(t1 - t0)
            st["awaited"].append(aw)
            st["py"].append(inside - aw)
            st["outside"].append((t1 - t0) - inside)
            st["n"] += len(awaits)
            st["each"].append(awaits)
        return value

    groups.TransactionGroups._run = _run  # type: ignore[method-assign]
    store_engine.Database._transact_async = _transact_async  # type: ignore[method-assign]


def _stages() -> None:
    """Counters per stage, written on SIGUSR2 (see the module's docstring)."""
    import json
    import resource

    from colaflow_mcp.delivery import backplane, notifier, recovery
    from colaflow_mcp.delivery.events import DecisionEvent
    from colaflow_mcp.store import groups

    c: dict[str, float] = {}
    objs: dict[str, Any] = {}

    def add(key: str, n: float = 1) -> None:
        c[key] = c.get(key, 0) + n

    original_run = groups.TransactionGroups._run

    async def _run(self: Any, key: str, batch: list[Any]) -> None:
        name = getattr(self.body, "__name__", "?").strip("_")
        add(f"{name}.groups")
        add(f"{name}.members", len(batch))
        t0 = time.perf_counter()
        try:
            await original_run(self, key, batch)
        finally:
            add(f"{name}.wall_ms", (time.perf_counter() - t0) * 1000)

    groups.TransactionGroups._run = _run  # type: ignore[method-assign]

    bp = backplane.RedisBackplane
    original_init, original_many, original_one = bp.__init__, bp.publish_many, bp.publish

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        objs["bus"] = self

    async def publish_many(self: Any, events: Any) -> Any:
        add("publish.batches")
        add("publish.events", len(events))
        return await original_many(self, events)

    async def publish(self: Any, event: Any) -> Any:
        add("publish.calls")
        return await original_one(self, event)

    bp.__init__ = init  # type: ignore[method-assign]
    bp.publish_many = publish_many  # type: ignore[method-assign]
    bp.publish = publish  # type: ignore[method-assign]

    original_from_json = DecisionEvent.from_json.__func__  # type: ignore[attr-defined]

    def from_json(cls: Any, raw: Any) -> Any:
        add("backplane.decoded")
        t0 = time.thread_time()
        try:
            return original_from_json(cls, raw)
        finally:
            add("backplane.decode_cpu_ms", (time.thread_time() - t0) * 1000)

    DecisionEvent.from_json = classmethod(from_json)  # type: ignore[method-assign,assignment]

    nt = notifier.Notifier
    original_ninit, original_dispatch = nt.__init__, nt.dispatch

    def ninit(self: Any, *args: Any, **kwargs: Any) -> None:
        original_ninit(self, *args, **kwargs)
        objs["notifier"] = self

    def dispatch(self: Any, event: Any) -> int:
        add("notifier.dispatches")
        t0 = time.thread_time()
        try:
            return original_dispatch(self, event)  # type: ignore[no-any-return]
        finally:
            add("notifier.dispatch_cpu_ms", (time.thread_time() - t0) * 1000)

    nt.__init__ = ninit  # type: ignore[method-assign]
    nt.dispatch = dispatch  # type: ignore[method-assign]

    rc = recovery.Recovery
    for name in ("sweep_unannounced", "reconcile", "reconcile_queues"):
        original = getattr(rc, name)

        def timed(original: Any = original, name: str = name) -> Any:
            async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                add(f"{name}.passes")
                t0 = time.perf_counter()
                try:
                    return await original(self, *args, **kwargs)
                finally:
                    add(f"{name}.wall_ms", (time.perf_counter() - t0) * 1000)
            return wrapper

        setattr(rc, name, timed())

    def dump(*_: object) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        line = dict(c, t=time.monotonic(), cpu_s=time.process_time(),
                    user_s=ru.ru_utime, sys_s=ru.ru_stime,
                    voluntary_cs=ru.ru_nvcsw, involuntary_cs=ru.ru_nivcsw)
        bus, ntf = objs.get("bus"), objs.get("notifier")
        if bus is not None:
            line["backplane.own_skipped"] = bus.own_skipped
            line["backplane.unwanted_skipped"] = getattr(bus, "unwanted_skipped", 0)
        if ntf is not None:
            line["notifier.delivered"] = ntf.delivered_count
        with open(f"{os.environ['BENCH_STAGES_OUT']}.{os.getpid()}", "a") as f:
            f.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR2, dump)


def _mem_state() -> dict[str, Any]:
    import ctypes
    import tempfile
    import threading

    state: dict[str, Any] = {"t": time.monotonic()}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmData", "Threads"):
                state[key] = int(rest.split()[0])
    libc = ctypes.CDLL("libc.so.6")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    state["malloc"] = {n: getattr(info, n) // 1024 for n in
                       ("arena", "hblkhd", "uordblks", "fordblks", "keepcost")}
    # sys._debugmallocstats writes to the C stderr: catch it in a file.
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        for line in tmp:
            if "arenas allocated current" in line:
                state["pymalloc_arenas"] = int(line.split("=")[-1])
            elif "bytes in allocated blocks" in line:
                state["pymalloc_used_kib"] = int(line.split("=")[-1].replace(",", "")) // 1024
            elif "bytes in available blocks" in line:
                state["pymalloc_free_blocks_kib"] = int(
                    line.split("=")[-1].replace(",", "")) // 1024
            elif "unused pools" in line and "bytes in" in line:
                state["pymalloc_unused_pools_kib"] = int(
                    line.split("=")[-1].replace(",", "")) // 1024
    try:  # SQLite's own heap (page caches, statements), process-wide
        import _sqlite3

        cur, high = ctypes.c_int64(), ctypes.c_int64()
        ctypes.CDLL(_sqlite3.__file__).sqlite3_status64(0, ctypes.byref(cur), ctypes.byref(high), 0)
        state["sqlite_kib"] = cur.value // 1024
    except (ImportError, OSError, AttributeError):
        pass
    state["py_threads"] = threading.active_count()
    state["modules"] = len(sys.modules)
    state["gc_count"] = gc.get_count()
    state["gc_collections"] = [s["collections"] for s in gc.get_stats()]
    return state


def _referrers_in_garbage(kind: str | None) -> list[str]:
    """For the first unreachable object of type ``kind``: what in the garbage refers to
    it, two levels up (where the cycle closes)."""
    if not kind:
        return []
    ids = {id(o) for o in gc.garbage}
    first = next((o for o in gc.garbage if type(o).__qualname__ == kind), None)
    lines: list[str] = []

    def describe(obj: object) -> str:
        if isinstance(obj, dict):
            return f"dict keys={list(obj)[:8]}"
        if type(obj).__name__ == "method":
            return f"method {getattr(obj, '__qualname__', '?')}"
        if type(obj).__name__ == "frame":
            return f"frame {obj.f_code.co_qualname}:{obj.f_lineno}"  # type: ignore[attr-defined]
        if type(obj).__name__ == "cell":
            return f"cell of {type(obj.cell_contents).__qualname__}"  # type: ignore[attr-defined]
        return type(obj).__qualname__

    def walk(obj: object, depth: int) -> None:
        for ref in gc.get_referrers(obj):
            if id(ref) in ids and len(lines) < 60:
                lines.append("  " * depth + describe(ref))
                if depth < 3:
                    walk(ref, depth + 1)

    if first is not None:
        lines.append(describe(first))
        walk(first, 1)
    return lines


def _mem_probe() -> None:
    out = os.environ.get("BENCH_MEMPROBE_OUT", "memprobe.jsonl")
    always = os.environ.get("BENCH_MEMPROBE_COLLECT") == "1"

    def dump(*_: object) -> None:
        import ctypes
        import json

        collect = always or os.path.exists(out + ".collect")

        line: dict[str, Any] = {"before": _mem_state()}
        if collect:
            # What the collector finds unreachable, by type (DEBUG_SAVEALL keeps it for a
            # count), then freed by a second pass.
            gc.set_debug(gc.DEBUG_SAVEALL)
            line["collected"] = gc.collect()
            kinds: dict[str, list[int]] = {}
            for obj in gc.garbage:
                kind = kinds.setdefault(f"{type(obj).__module__}.{type(obj).__qualname__}",
                                        [0, 0])
                kind[0] += 1
                kind[1] += sys.getsizeof(obj)
            line["garbage"] = sorted(kinds.items(), key=lambda kv: -kv[1][1])[:40]
            line["referrers"] = _referrers_in_garbage(os.environ.get("BENCH_MEMPROBE_WHO"))
            gc.garbage.clear()
            gc.set_debug(0)
            gc.collect()
            line["after_collect"] = _mem_state()
            t0 = time.perf_counter()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            line["trim_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            line["after_trim"] = _mem_state()
        line["modules_loaded"] = sorted(sys.modules)
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR1, dump)


INSTRUMENTS: dict[str, Callable[[], None]] = {
    "gc-log": _gc_log, "gc-total": _gc_total, "gc-tune": _gc_tune, "tracemalloc": _tracemalloc,
    "audit-off": _audit_off, "group-split": _group_split, "stages": _stages,
    "tail-trace": _tail_trace, "mem-probe": _mem_probe,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_INSTRUMENT", "").split(",")):
        INSTRUMENTS[name.strip()]()
    from colaflow_mcp.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
