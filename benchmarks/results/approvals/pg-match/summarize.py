"""Table of an A/B window: python summarize.py <dir>"""
import json
import pathlib
import statistics
import sys

d = pathlib.Path(sys.argv[1])
loads = {}
for line in (d / "loads.txt").read_text().splitlines():
    if " start load: " in line:
        loads[line.split()[0]] = line.split("load: ")[1].split()[0]
rows = []
for log in sorted(d.glob("r*.log")):
    tag = log.stem
    for line in log.read_text().splitlines():
        if '"steady"' not in line:
            continue
        doc = json.loads(line)
        ((eng, v),) = [(k, x) for k, x in doc.items() if k != "ref"]
        s = v["steady"]
        ref = doc.get("ref") or {}
        rows.append((tag, eng, s["approvals_per_s"], s["event_after_return_ms"]["p99"],
                     s["call_ms"]["p50"], s["call_ms"]["p99"], s["server_cpu_ms_per_approval"],
                     s.get("postgres_cpu_ms_per_approval"), s["server_cpu_cores"],
                     s["loadavg_1m"], loads.get(tag), s["missing"], s["duplicates"],
                     ref.get("serial_per_s"), ref.get("concurrent8_per_s")))
print("| run | engine | approvals/s | → event p99 ms | call p50 / p99 ms"
      " | server CPU ms/approval | PG CPU ms/approval | server cores | load (1 min)"
      " | missing/dup | asyncpg ref serial / 8 conc. /s |")
print("|" + "---|" * 11)
for r in rows:
    pg = "–" if r[7] is None else f"{r[7]:.2f}"
    ref = f"{r[13]:,.0f} / {r[14]:,.0f}" if r[13] else ""
    print(f"| {r[0]} | {r[1]} | {r[2]:,.0f} | {r[3]:.1f} | {r[4]:.1f} / {r[5]:.0f}"
          f" | {r[6]:.2f} | {pg} | {r[8]:.2f} | {r[10]} | {r[11]}/{r[12]} | {ref} |")
by: dict[tuple[str, str], list[tuple]] = {}
for r in rows:
    by.setdefault((r[0].split("-", 1)[1], r[1]), []).append(r)
print()
print("| variant | engine | approvals/s median [range] | server CPU ms median [range]"
      " | p99 → event ms [range] |")
print("|---|---|---|---|---|")
for (var, eng), rs in sorted(by.items()):
    a = [r[2] for r in rs]
    c = [r[6] for r in rs]
    p = [r[3] for r in rs]
    print(f"| {var} | {eng} | {statistics.median(a):,.0f} [{min(a):,.0f}–{max(a):,.0f}] |"
          f" {statistics.median(c):.2f} [{min(c):.2f}–{max(c):.2f}] | {min(p):.1f}–{max(p):.1f} |")
print()
print("PostgreSQL / SQLite in the same run:")
for tag in sorted({r[0] for r in rows}):
    e = {r[1]: r[2] for r in rows if r[0] == tag}
    cpu = {r[1]: r[6] for r in rows if r[0] == tag}
    if "postgres" in e and "sqlite" in e:
        print(f"  {tag}: {e['postgres'] / e['sqlite']:.2f}x approvals/s;"
              f" CPU PG {cpu['postgres']:.2f} vs SQLite {cpu['sqlite']:.2f}")
