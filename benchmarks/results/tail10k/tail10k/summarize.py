"""Summarize A/B latency runs: python summarize.py DIR [DIR...] (each holding SIDE-N/)."""
import glob
import json
import os
import statistics
import sys

rows = {}
for d in sys.argv[1:]:
    for path in sorted(glob.glob(os.path.join(d, "*-*/latency.json"))):
        name = os.path.basename(os.path.dirname(path))
        side = name.rsplit("-", 1)[0]
        r = json.load(open(path))["runs"][0]
        load = open(os.path.join(d, name + ".load")).read().split()
        lat = r["latency_ms"]
        row = (lat["p50"], lat["p90"], lat["p99"], lat["max"], r["negative_share"],
               r["call_ms"]["p50"], r["cpu_ms_per_delivered"], r["rss_per_connection_kib"],
               float(load[1]), r["delivered"], r["missing"], r["duplicates"],
               r["since_call_ms"]["p50"], r["since_call_ms"]["p99"])
        rows.setdefault(side, []).append(row)
        print(f"{d.rstrip('/').split('/')[-1]:14s} {name:10s} p50 {row[0]:.3f} p90 {row[1]:.3f} "
              f"p99 {row[2]:.3f} max {row[3]:7.2f} neg {row[4]:.2f} call50 {row[5]:.2f} "
              f"cpu/del {row[6]:.2f} KiB/conn {row[7]:.2f} load {row[8]:.2f} "
              f"delivered {row[9]} missing {row[10]} dup {row[11]} "
              f"from-send p50 {row[12]:.2f} p99 {row[13]:.2f}")
for side, rs in rows.items():
    p99 = [r[2] for r in rs]
    p50 = [r[0] for r in rs]
    print(f"{side}: n={len(rs)} p99 median {statistics.median(p99):.3f} "
          f"[{min(p99):.3f}-{max(p99):.3f}]"
          f" p50 median {statistics.median(p50):.3f} [{min(p50):.3f}-{max(p50):.3f}]"
          f" from-send p50 median {statistics.median(r[12] for r in rs):.2f}"
          f" p99 median {statistics.median(r[13] for r in rs):.2f}"
          f" loads {[r[8] for r in rs]}")
