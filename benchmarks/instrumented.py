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


def _audit_off() -> None:
    from colaflow_mcp.domain.changes import ChangeService

    original = ChangeService.__init__

    def init(self: ChangeService, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.recorders = ()

    ChangeService.__init__ = init  # type: ignore[method-assign]


INSTRUMENTS: dict[str, Callable[[], None]] = {
    "gc-log": _gc_log, "gc-total": _gc_total, "gc-tune": _gc_tune, "tracemalloc": _tracemalloc,
    "audit-off": _audit_off,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_INSTRUMENT", "").split(",")):
        INSTRUMENTS[name.strip()]()
    from colaflow_mcp.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
