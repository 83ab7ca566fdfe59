"""CPU of the metric updates on the hot paths, per call: what ``/metrics`` adds to a
proposal, a decision and a notification.

``python -m benchmarks.metrics_micro [--calls N]``. Each figure is the best of five runs
of ``N`` calls (the least disturbed by other processes), in microseconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from colaflow_mcp import metrics
from colaflow_mcp.hub.outbound import Limits, Outbound


def best_us(fn: Callable[[], object], calls: int) -> float:
    """The best of five runs: microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            fn()
        runs.append((time.process_time() - start) / calls * 1e6)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    calls = parser.parse_args().calls
    now = time.time()
    limits = Limits(max_message_bytes=32 * 1024, outbound_queue_size=1024)
    plain, timed = Outbound(limits), Outbound(limits)
    frame = '{"type":1,"target":"PendingChangeApproved","arguments":[{}]}\x1e'

    def write_plain() -> None:  # one frame queued, taken and written, as before
        plain.push(frame, len(frame), False)
        plain.take()
        plain.written()

    def write_timed() -> None:  # the same, carrying the decision's commit time
        timed.push(frame, len(frame), False)
        timed.note_commit(now)
        timed.take()
        for committed in timed.written():
            metrics.notified("hub", committed)

    rows = [
        ("proposal counted (metrics.proposed)", lambda: metrics.proposed("create_issue")),
        ("decision counted (metrics.decided)", lambda: metrics.decided("Approved")),
        ("notification observed (metrics.notified)", lambda: metrics.notified("mcp", now)),
        ("hub frame written, before", write_plain),
        ("hub frame written, with its commit time observed", write_timed),
    ]
    for name, fn in rows:
        print(f"{name:52s} {best_us(fn, calls):6.2f} µs")


if __name__ == "__main__":
    main()
