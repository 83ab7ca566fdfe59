"""Table of the served SQLite A/B runs in a folder (<prefix><n>-<code>.json, code main,
branch, claim, head …): ``python summarize.py DIR [PREFIX]``."""
import json
import statistics
import sys
from pathlib import Path

here = Path(sys.argv[1])
prefix = sys.argv[2] if len(sys.argv) > 2 else "pair"
print("| run | approvals/s | server CPU ms/approval (kernel) | cores | approve → event p99 ms "
      "(after return) | approve call p50 / p99 ms | load 1m before → after |")
print("|---|---|---|---|---|---|---|")
got: dict[str, dict[str, list[float]]] = {}
pairs: dict[str, dict[str, float]] = {}
for p in sorted(here.glob(f"{prefix}*-*.json"),
                key=lambda p: (int(p.stem.split("-")[0][len(prefix):]), p.stem)):
    d = json.loads(p.read_text())
    code = p.stem.split("-")[1]
    for r in d["rounds"]:
        s = r["sqlite"]["steady"]
        m = d["machine"]
        g = got.setdefault(code, {"rate": [], "cpu": [], "p99": []})
        g["rate"].append(s["approvals_per_s"])
        g["cpu"].append(s["server_cpu_ms_per_approval"])
        g["p99"].append(s["event_after_return_ms"]["p99"])
        pairs.setdefault(p.stem.split("-")[0], {})[code] = s["server_cpu_ms_per_approval"]
        assert s["missing"] == 0 and s["duplicates"] == 0, p
        print(f"| {p.stem} | {s['approvals_per_s']:,.0f} | "
              f"{s['server_cpu_ms_per_approval']:.3f} ({s['server_sys_ms_per_approval']:.2f}) | "
              f"{s['server_cpu_cores']:.2f} | {s['event_after_return_ms']['p99']:.2f} | "
              f"{s['call_ms']['p50']:.1f} / {s['call_ms']['p99']:.1f} | "
              f"{m['loadavg_before'][0]:.2f} → {m['loadavg_after'][0]:.2f} |")
print()
for code, g in got.items():
    print(f"{code}: {len(g['rate'])} runs; approvals/s median {statistics.median(g['rate']):,.0f} "
          f"[{min(g['rate']):,.0f}–{max(g['rate']):,.0f}]; server CPU ms median "
          f"{statistics.median(g['cpu']):.3f} [{min(g['cpu']):.3f}–{max(g['cpu']):.3f}]; "
          f"p99 median {statistics.median(g['p99']):.2f} [{min(g['p99']):.2f}–{max(g['p99']):.2f}]")
for code in got:
    if code == "main":
        continue
    deltas = [100 * (v[code] / v["main"] - 1) for v in pairs.values() if code in v and "main" in v]
    print(f"per {prefix}, {code} vs main server CPU: " + ", ".join(f"{x:+.1f} %" for x in deltas)
          + f" (lower in {sum(x < 0 for x in deltas)} of {len(deltas)})")
