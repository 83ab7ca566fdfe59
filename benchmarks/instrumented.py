"""`colaflow-mcp` with measuring instruments or candidate fixes, for the bottleneck experiments.

The benchmarks start this instead of ``colaflow-mcp`` when ``BENCH_INSTRUMENT`` is set to
a comma-separated list of:

- ``gc-log``: log every garbage-collection pause over 5 ms (``GCPAUSE t=… gen=… ms=…``,
  ``t`` is ``time.monotonic()``, comparable with a result's ``phase_monotonic``);
- ``gc-tune``: ``gc.set_threshold(50_000, 20, 100)`` (candidate fix for the pauses);
- ``tracemalloc``: on SIGUSR1, the first time take a snapshot, later print the growth
  since it by file (``TM …`` lines);
- ``publisher-off-path``: mark decisions announced from a task of their own, so a slow
  database commit never holds back the next publish (candidate fix for notify.py).

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
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, dump)


def _publisher_off_path() -> None:
    import anyio

    from colaflow_mcp import notify

    async def run_publisher(self: notify.Notifier, batch: int = 256) -> None:
        send, receive = anyio.create_memory_object_stream[list[str]](10_000)

        async def marker() -> None:
            while True:
                ids = list(await receive.receive())
                while True:
                    try:
                        ids.extend(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._mark_announced(ids)

        async with anyio.create_task_group() as tg:
            tg.start_soon(marker)
            while True:
                events = [await self._outbox_receive.receive()]
                while len(events) < batch:
                    try:
                        events.append(self._outbox_receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                published: list[str] = []
                for event in events:
                    try:
                        await self.bus.publish(event)
                        published.append(event.change_id)
                    except Exception:
                        break  # the sweep re-announces the rest
                if published:
                    send.send_nowait(published)

    notify.Notifier.run_publisher = run_publisher  # type: ignore[method-assign]


def _gc_tune() -> None:
    gc.set_threshold(50_000, 20, 100)


INSTRUMENTS: dict[str, Callable[[], None]] = {
    "gc-log": _gc_log, "gc-tune": _gc_tune, "tracemalloc": _tracemalloc,
    "publisher-off-path": _publisher_off_path,
}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_INSTRUMENT", "").split(",")):
        INSTRUMENTS[name.strip()]()
    from colaflow_mcp.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
