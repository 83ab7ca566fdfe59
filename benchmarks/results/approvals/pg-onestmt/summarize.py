"""Table of the A/B runs in this folder (pair*-main.json, pair*-branch.json):
``python summarize.py [DIR]``."""
import json
import statistics
import sys
from pathlib import Path

here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
print("| run | SQLite /s | PG /s | PG / SQLite | approve → event p99 ms SQLite / PG "
      "| approve call p99 ms SQLite / PG | server CPU ms/approval SQLite / PG "
      "| PG's own CPU ms/approval | PG server+own | asyncpg alone serial / 8 conc /s "
      "| load 1m before → after |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
ratios: dict[str, list[float]] = {"main": [], "branch": []}
for p in sorted(here.glob("pair*-*.json"), key=lambda p: (p.stem.split("-")[0], p.stem)):
    d = json.loads(p.read_text())
    for r in d["rounds"]:
        sq, pg = r["sqlite"]["steady"], r["postgres"]["steady"]
        ref = r["postgres"]["asyncpg_reference"]
        ratio = pg["approvals_per_s"] / sq["approvals_per_s"]
        ratios[p.stem.split("-")[1]].append(ratio)
        m = d["machine"]
        print(f"| {p.stem} | {sq['approvals_per_s']:,.0f} | {pg['approvals_per_s']:,.0f} | "
              f"{ratio:.2f} | {sq['event_after_return_ms']['p99']:.1f} / "
              f"{pg['event_after_return_ms']['p99']:.1f} | {sq['call_ms']['p99']:.1f} / "
              f"{pg['call_ms']['p99']:.1f} | {sq['server_cpu_ms_per_approval']:.2f} / "
              f"{pg['server_cpu_ms_per_approval']:.2f} | "
              f"{pg['postgres_cpu_ms_per_approval']:.2f} | "
              f"{pg['server_cpu_ms_per_approval'] + pg['postgres_cpu_ms_per_approval']:.2f} | "
              f"{ref['serial_per_s']:,.0f} / {ref['concurrent8_per_s']:,.0f} | "
              f"{m['loadavg_before'][0]:.2f} → {m['loadavg_after'][0]:.2f} |")
for code, rs in ratios.items():
    if rs:
        print(f"\n{code}: PG/SQLite median {statistics.median(rs):.2f}, "
              f"range {min(rs):.2f}–{max(rs):.2f} ({len(rs)} runs)")
