"""Approvals A/B summary: python approvals_summary.py DIR."""
import glob
import json
import os
import sys

for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    d = json.load(open(f))["rounds"][0]["sqlite"]
    s = d["steady"]
    after = s["event_after_return_ms"]
    print(f"{os.path.basename(f):14s} {s['approvals_per_s']:7.1f}/s "
          f"cpu {s['server_cpu_ms_per_approval']:.3f} ms/approval "
          f"after-return p50 {after['p50']:.3f} p99 {after['p99']:.3f} "
          f"call p50 {s['call_ms']['p50']:.2f} missing {s['missing']} dup {s['duplicates']} "
          f"load {d['loadavg_before'][0]:.2f}")
