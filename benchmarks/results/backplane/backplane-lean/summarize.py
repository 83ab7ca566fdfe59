"""Tables of the A/B window: ``python summarize.py DIR`` (the approvals JSON files there)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def rows(folder: Path) -> list[tuple[str, str, dict]]:
    out = []
    # In the order they ran (loads.txt names each run as it starts).
    ran = [line.split()[-1] for line in (folder / "loads.txt").read_text().splitlines()
           if " done " not in line]
    for path in sorted(folder.glob("p*-*.json"), key=lambda p: ran.index(p.stem)):
        data = json.loads(path.read_text())
        for rnd in data["rounds"]:
            for run, r in rnd.items():
                out.append((path.stem, run, r))
    return out


def main() -> None:
    folder = Path(sys.argv[1])
    print("| run | engine | approvals/s | instance 0 cores | instance 1 cores | instances ms/"
          "approval | PG ms/approval | machine busy cores | other cores | p50 / p99 ms | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, _run, r in rows(folder):
        s = r["steady"]
        c = s["cpu"]["components"]
        inst = [c[k] for k in ("instance0", "instance1") if k in c]
        ms = sum(i["ms_per_approval"] for i in inst)
        pg = c["postgres_backends"]["ms_per_approval"] + c["postgres_shared"]["ms_per_approval"]
        version = name.split("-")[1]
        engine = r["engine"]
        per.setdefault((engine, version), []).append((s["approvals_per_s"], ms))
        i1 = f'{inst[1]["cores"]:.2f}' if len(inst) > 1 else "–"
        print(f'| {name} | {engine} | {s["approvals_per_s"]:.0f} | {inst[0]["cores"]:.2f} | '
              f'{i1} | **{ms:.2f}** | {pg:.2f} | {s["cpu"]["machine"]["busy_cores"]:.2f} | '
              f'{c["other"]["cores"]:.2f} | {s["event_after_return_ms"]["p50"]:.1f} / '
              f'{s["event_after_return_ms"]["p99"]:.1f} | {s["loadavg_1m"]:.1f} |')
        if s["missing"] or s["duplicates"]:
            print(f"  !! missing {s['missing']} duplicates {s['duplicates']}")
    print()
    print("| engine | version | approvals/s median (range) "
          "| instances ms/approval median (range) |")
    print("|---|---|---|---|")
    for (engine, version), v in sorted(per.items()):
        rate, ms = [x[0] for x in v], [x[1] for x in v]
        print(f"| {engine} | {version} | {statistics.median(rate):.0f} ({min(rate):.0f}–"
              f"{max(rate):.0f}) | {statistics.median(ms):.2f} ({min(ms):.2f}–{max(ms):.2f}) |")


if __name__ == "__main__":
    main()
