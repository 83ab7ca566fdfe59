"""Which stall each slow delivery overlaps: a latency run's ``slow_monotonic`` against an
``instrumented.py`` ``tail-trace`` file (server GC, server loop lag, hub timer slices, the
workers' loop lag). ``python -m benchmarks.tail_attrib RESULT.json TRACE [--over MS]``.

A stall "overlaps" a delivery when it ran between the decide call's return and the event's
arrival (both ``time.monotonic()``, system-wide). Prints a table by cause and, per cause,
how many deliveries over ``--over`` ms it touched, then the stalls' own totals.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"TT (\w+) (.*)")


def load_trace(path: Path) -> list[tuple[str, float, float, dict[str, str]]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        fields = dict(kv.split("=", 1) for kv in m.group(2).split())
        t, ms = float(fields["t"]), float(fields["ms"])
        kind = m.group(1)
        if kind == "gc":
            kind = f"gc{fields['gen']}"
        out.append((kind, t, t + ms / 1000, fields))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result", type=Path)
    ap.add_argument("trace", type=Path)
    ap.add_argument("--over", type=float, default=1.0)
    args = ap.parse_args()
    data = json.loads(args.result.read_text())
    run = data["runs"][0] if "runs" in data else data
    trace = load_trace(args.trace)
    t0, t1 = run["phase_monotonic"]
    window = [e for e in trace if t0 - 0.1 <= e[1] <= t1 + 1.0]
    print(f"latency_ms {run['latency_ms']} load {run['loadavg_1m']}")
    slow = [s for s in run["slow_monotonic"] if (s[2] - s[1]) * 1000 > args.over]
    causes: Counter[str] = Counter()
    for started, returned, arrived in sorted(slow):
        hit = [e for e in window if e[1] <= arrived and e[2] >= returned
               and (e[2] - e[1]) * 1000 >= 0.25]
        names = sorted({e[0] for e in hit})
        causes[" + ".join(names) or "(none traced)"] += 1
        detail = ", ".join(f"{e[0]} {1000 * (e[2] - e[1]):.2f}ms@{1000 * (e[1] - returned):+.2f}"
                           for e in hit)
        print(f"  +{started - t0:7.3f}s after-return {1000 * (arrived - returned):7.3f} ms"
              f"  call {1000 * (returned - started):6.2f} ms  {detail}")
    print(f"{len(slow)} deliveries over {args.over} ms, by what overlapped them:")
    for name, n in causes.most_common():
        print(f"  {n:4d}  {name}")
    phase = [e for e in trace if t0 <= e[1] <= t1]
    print(f"stalls in the decision phase ({t1 - t0:.1f} s):")
    kinds = sorted({e[0] for e in phase})
    for k in kinds:
        ms = sorted(1000 * (e[2] - e[1]) for e in phase if e[0] == k)
        print(f"  {k:6s} n={len(ms):5d} total={sum(ms):8.1f} ms  p50={ms[len(ms) // 2]:.3f}"
              f"  max={ms[-1]:.3f}  over 0.5 ms: {sum(1 for v in ms if v > 0.5)}")


if __name__ == "__main__":
    main()
