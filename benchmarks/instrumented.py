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
- ``tail-trace``: where a slow delivery's time went (RESULTS, "The tail at 10,000
  connections"): every garbage collection (start, generation, ms), event-loop lag over
  0.25 ms (a ``call_later`` probe every 2 ms: when it ran late and by how much) and every
  hub timer slice (start, connections, pings queued, ms), one line each (``TT …``,
  ``time.monotonic()``) to the file ``BENCH_TRACE_OUT`` names (default: the log);
- ``gc-freeze``: ``gc.freeze()`` once the hub has connections (candidate fix; see
  ``colaflow_mcp.cli``);
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
    st: dict[str, Any] = {"in": None, "awaits": [], "n": 0, "wall": [], "awaited": [],
                          "py": [], "outside": [], "gap": [], "lag": [], "size": [],
                          "handoff": {}, "t": now(), "probe": False}

    def timed(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def await_(awaitable: Any) -> Any:
            if st["in"] is not greenlet.getcurrent():  # another task's session
                return original(awaitable)
            t0 = now()
            try:
                return original(awaitable)
            finally:
                st["awaits"].append(now() - t0)
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
        if now() - st["t"] < 2.0 or not st["wall"]:
            return
        st["t"] = now()
        def m(k: str) -> str:
            xs = st[k]
            return f"{k}_mean={statistics.fmean(xs or [0.0]) * 1000:.3f} {k}_p90={pct(xs, 0.9):.3f}"
        line = (
            f"SPLIT t={time.monotonic():.1f} groups={len(st['wall'])} "
            f"members={sum(st['size'])} awaits_per_group={st['n'] / len(st['wall']):.2f} "
            + " ".join(m(k) for k in ("wall", "awaited", "py", "outside", "gap", "lag"))
            + f" lag_n={len(st['lag'])}\n")
        sys.stderr.write(line)
        sys.stderr.flush()
        if os.environ.get("BENCH_SPLIT_OUT"):  # the server's log goes with its work folder
            with open(os.environ["BENCH_SPLIT_OUT"], "a") as f:
                f.write(line)
        for k in ("wall", "awaited", "py", "outside", "gap", "lag", "size"):
            st[k] = []
        st["n"] = 0

    original_run = groups.TransactionGroups._run
    original_transact = store_engine.Database._transact_async

    async def _run(self: Any, key: str, batch: list[Any]) -> None:
        if not st["probe"]:
            st["probe"] = True
            asyncio.get_running_loop().call_later(0.005, probe)
        decisions = getattr(self.body, "__name__", "") == "_decide_group"
        t_hand = st["handoff"].pop(key, None) if decisions else None
        if t_hand is not None:
            st["gap"].append(now() - t_hand)
        token = deciding.set(decisions)
        try:
            await original_run(self, key, batch)
        finally:
            deciding.reset(token)
        if decisions:
            st["size"].append(len(batch))
            st["handoff"][key] = now()
            report()

    async def _transact_async(self: Any, fn: Callable[[Any], Any]) -> Any:
        if not deciding.get():
            return await original_transact(self, fn)
        marks: dict[str, float] = {}

        def wrapped(s: Any) -> Any:
            st["in"], st["awaits"] = greenlet.getcurrent(), []
            marks["f0"] = now()
            try:
                return fn(s)
            finally:
                marks["f1"] = now()
                st["in"] = None
        t0 = now()
        value = await original_transact(self, wrapped)
        t1 = now()
        if "f1" in marks:
            inside = marks["f1"] - marks["f0"]
            aw = sum(st["awaits"])
            st["wall"].append(t1 - t0)
            st["awaited"].append(aw)
            st["py"].append(inside - aw)
            st["outside"].append((t1 - t0) - inside)
            st["n"] += len(st["awaits"])
        return value

    groups.TransactionGroups._run = _run  # type: ignore[method-assign]
    store_engine.Database._transact_async = _transact_async  # type: ignore[method-assign]


INSTRUMENTS: dict[str, Callable[[], None]] = {
    "gc-log": _gc_log, "gc-total": _gc_total, "gc-tune": _gc_tune, "tracemalloc": _tracemalloc,
    "audit-off": _audit_off, "group-split": _group_split, "tail-trace": _tail_trace,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_INSTRUMENT", "").split(",")):
        INSTRUMENTS[name.strip()]()
    from colaflow_mcp.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
