"""Print the steady part of each run's log in window folders, then the medians and ranges
per version and engine (the tables in RESULTS.md). Logs are named ``p<N>-<version>.log``.

python summarize.py w1 [w2 ...]
"""

import glob
import json
import os
import statistics
import sys

rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
for folder in sys.argv[1:]:
    for path in sorted(glob.glob(folder + "/*.log")):
        version = os.path.basename(path)[:-4].split("-", 1)[1]
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            for engine, value in json.loads(line).items():
                if engine == "ref" or value is None:
                    continue
                s = value["steady"]
                p99 = s["event_after_return_ms"]["p99"]
                print(f"{folder}/{os.path.basename(path):14s} {engine:8s} "
                      f"{s['approvals_per_s']:7.1f}/s p99 {p99:6.2f} "
                      f"cpu {s['server_cpu_ms_per_approval']:.3f} "
                      f"pg {s.get('postgres_cpu_ms_per_approval', '-')} "
                      f"miss {s['missing']} dup {s['duplicates']} load {s['loadavg_1m']}")
                rows.setdefault((version, engine), []).append(
                    (s["approvals_per_s"], s["server_cpu_ms_per_approval"], p99))


def spread(values: list[float], fmt: str) -> str:
    return (f"{statistics.median(values):{fmt}} "
            f"[{min(values):{fmt}}-{max(values):{fmt}}]")


print()
for (version, engine), runs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{engine:8s} {version:7s} n={len(runs)} "
          f"approvals/s {spread([r[0] for r in runs], '.0f')}  "
          f"server CPU ms {spread([r[1] for r in runs], '.3f')}  "
          f"p99 ms {spread([r[2] for r in runs], '.2f')}")
