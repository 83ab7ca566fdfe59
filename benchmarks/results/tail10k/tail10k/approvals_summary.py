"""Approvals A/B summary: python approvals_summary.py DIR."""
import glob
import json
import os
import sys

for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    d = json.load(open(f))["rounds"][0]["sqlite"]
    s = d["steady"]
    print(f"{os.path.basename(f):14s} {s['approvals_per_s']:7.1f}/s cpu {s['server_cpu_ms_per_approval']:.3f} "
          f"ms/approval after-return p50 {s['event_after_return_ms']['p50']:.3f} "
          f"p99 {s['event_after_return_ms']['p99']:.3f} call p50 {s['call_ms']['p50']:.2f} "
          f"missing {s['missing']} dup {s['duplicates']} load {d['loadavg_before'][0]:.2f}")
