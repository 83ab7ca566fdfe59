"""One line per raw file of a pg-onetrip window: ``python pg-onetrip-summary.py [DIR]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
where = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
print("micro:")
for f in sorted(where.glob("micro-*.txt")):
    lines = f.read_text().strip().splitlines()
    if not lines:
        print(f.name, "(empty)")
        continue
    j = json.loads(lines[-1])
    rt = j["round_trips_per_approval"]
    print(f"{f.name:28s} {j['per_s']:7.1f}/s cpu {j['cpu_ms_per_approval']:.3f} ms  "
          f"rt/approval {sum(rt.values()):.2f} {rt}  load {j['loadavg'][0]:.2f}")
print("served:")
for f in sorted(where.glob("served-*.json")):
    for engine, v in json.loads(f.read_text())["rounds"][0].items():
        s, b = v["steady"], v.get("burst", {})
        ev = s["event_after_return_ms"]
        print(f"{f.name:24s} {engine:8s} {s['approvals_per_s']:7.1f}/s  "
              f"event p50/p99 {ev['p50']:.2f}/{ev['p99']:.1f}  "
              f"server CPU {s['server_cpu_ms_per_approval']:.2f} ms  "
              f"PG CPU {s.get('postgres_cpu_ms_per_approval', '-')}  "
              f"burst {b.get('approvals_per_s', '-')}  load {s['loadavg_1m']}  "
              f"missing/dup {s['missing']}/{s['duplicates']}")
