"""All served SQLite runs of this branch's A/B, main against the set-wise claim (ab/pair*,
ab/pairb* 'branch', ab3/round* 'claim'): medians and the sign per pair/round:
``python pooled.py`` (run from this folder)."""
import json
import statistics
from pathlib import Path

here = Path(__file__).parent
runs: dict[str, dict[str, dict[str, float]]] = {}
for p in list(here.glob("ab/pair*-*.json")) + list(here.glob("ab3/round*-*.json")):
    group, code = p.stem.split("-")
    if code == "head":  # the reverted audit cut
        continue
    code = "main" if code == "main" else "claim"
    s = json.loads(p.read_text())["rounds"][0]["sqlite"]["steady"]
    runs.setdefault(f"{p.parent.name}/{group}", {})[code] = {
        "cpu": s["server_cpu_ms_per_approval"], "rate": s["approvals_per_s"],
        "p99": s["event_after_return_ms"]["p99"], "cores": s["server_cpu_cores"]}
for code in ("main", "claim"):
    xs = [r[code] for r in runs.values() if code in r]
    for k in ("cpu", "rate", "p99", "cores"):
        v = [x[k] for x in xs]
        print(f"{code} {k}: median {statistics.median(v):.3f} [{min(v):.3f}–{max(v):.3f}] "
              f"({len(v)} runs)")
d = [100 * (r["claim"]["cpu"] / r["main"]["cpu"] - 1) for r in runs.values() if len(r) == 2]
print(f"claim vs main, server CPU per pair: median {statistics.median(d):+.1f} %, "
      f"lower in {sum(x < 0 for x in d)} of {len(d)}")
d = [100 * (r["claim"]["rate"] / r["main"]["rate"] - 1) for r in runs.values() if len(r) == 2]
print(f"claim vs main, approvals/s per pair: median {statistics.median(d):+.1f} %, "
      f"higher in {sum(x > 0 for x in d)} of {len(d)}")
