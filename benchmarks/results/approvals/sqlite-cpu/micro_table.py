"""Medians of micro*.txt (decide_micro runs, each preceded by ``== <code> …``):
``python micro_table.py FILE``."""
import json
import statistics
import sys

runs: dict[str, list[tuple[float, float]]] = {}
code = ""
for line in open(sys.argv[1]):
    if line.startswith("== "):
        code = line.split()[1]
    elif line.startswith("{"):
        d = json.loads(line)
        runs.setdefault(code, []).append((d["per_s"], d["cpu_ms_per_approval"]))
for code, rs in runs.items():
    cpu = [c for _, c in rs]
    rate = [r for r, _ in rs]
    print(f"{code}: {len(rs)} runs; CPU ms/approval median {statistics.median(cpu):.3f} "
          f"[{min(cpu):.3f}–{max(cpu):.3f}]; approvals/s median {statistics.median(rate):,.0f} "
          f"[{min(rate):,.0f}–{max(rate):,.0f}]; in order: " + ", ".join(f"{c:.3f}" for c in cpu))
# Pairs as micro.sh runs them: consecutive runs, main/branch then branch/main.
seq: list[tuple[str, float]] = []
code = ""
for line in open(sys.argv[1]):
    if line.startswith("== "):
        code = line.split()[1]
    elif line.startswith("{"):
        seq.append((code, json.loads(line)["cpu_ms_per_approval"]))
deltas = []
for a, b in zip(seq[::2], seq[1::2], strict=False):
    d = dict([a, b])
    if "main" in d and "branch" in d:
        deltas.append(100 * (d["branch"] / d["main"] - 1))
if deltas:
    print("per pair, branch vs main CPU: " + ", ".join(f"{x:+.1f} %" for x in deltas)
          + f" (lower in {sum(x < 0 for x in deltas)} of {len(deltas)})")
