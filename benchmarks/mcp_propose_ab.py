"""MCP proposals, two versions of our server and the bare SDK, rows interleaved.

    python -m benchmarks.mcp_propose_ab --code main=/tmp/a,branch=/tmp/b [--sessions 1,8]
        [--calls 600] [--repeats 6] [--eras modern,legacy] [--out FILE]

``benchmarks.mcp_propose`` runs one server at a time, so on a shared machine two versions
measured minutes apart see different machines (the peer's own CPU per call moved by 1.5x
between rounds). Here all three servers run at once, each version's ``colaflow_mcp`` taken
from the folder given (put first on the server's ``PYTHONPATH``; the peer gets the first
one's), and the rows go round-robin: for each era and session count, ``--repeats`` times
one row per server, the order rotated every repeat. Each row is ``mcp_propose.measure``
(a client process of its own, warm-up, server CPU per call). Printed: every row as JSON,
then per era and sessions the median CPU per call of each server and each version's ratio
to the peer (median of the per-repeat ratios, range in brackets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.mcp_propose import bare_peer, measure
from benchmarks.server import ServerUnderTest, running_server


def _started(stack: ExitStack, root: Path, code: dict[str, str]) -> dict[str, ServerUnderTest]:
    servers: dict[str, ServerUnderTest] = {}
    saved = os.environ.get("PYTHONPATH")
    try:
        for name, path in code.items():
            os.environ["PYTHONPATH"] = path
            servers[name] = stack.enter_context(running_server(root / name))
        os.environ["PYTHONPATH"] = next(iter(code.values()))
        servers["bare"] = stack.enter_context(bare_peer(root / "bare"))
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return servers


def run(code: dict[str, str], sessions: list[int], calls: int, repeats: int,
        eras: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcp-propose-ab-") as tmp, ExitStack() as stack:
        servers = _started(stack, Path(tmp), code)
        names = list(servers)
        for era in eras:
            for n in sessions:
                for rep in range(repeats):
                    k = rep % len(names)
                    for name in names[k:] + names[:k]:
                        server = servers[name]
                        row = measure(server, server.creds.api_key, n, max(1, calls // n), era)
                        row.update(server=name, repeat=rep)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    versions = [s for s in dict.fromkeys(r["server"] for r in rows) if s != "bare"]
    head = ["era", "sessions", *(f"{v} CPU ms/call" for v in versions), "bare CPU ms/call",
            *(f"{v} / bare" for v in versions), "load"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    med = statistics.median
    for era, n in dict.fromkeys((r["era"], r["sessions"]) for r in rows):
        sel = [r for r in rows if r["era"] == era and r["sessions"] == n]
        cpu = {s: {r["repeat"]: r["server_cpu_ms_per_call"] for r in sel if r["server"] == s}
               for s in [*versions, "bare"]}
        cells = [era, str(n)]
        cells += [f"{med(cpu[v].values()):.2f}" for v in versions]
        cells.append(f"{med(cpu['bare'].values()):.2f}")
        for v in versions:
            # A repeat whose peer read 0 CPU ticks (too few calls) has no ratio.
            ratios = [cpu[v][k] / cpu["bare"][k] for k in cpu[v] if cpu["bare"].get(k)]
            cells.append(f"{med(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                         if ratios else "–")
        loads = [x for r in sel for x in r["loadavg"]]
        cells.append(f"{min(loads):.1f}–{max(loads):.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mcp_propose_ab",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", required=True,
                        help="name=folder,... (each folder holds a colaflow_mcp package)")
    parser.add_argument("--sessions", default="1,8")
    parser.add_argument("--calls", type=int, default=600, help="measured calls per row")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--eras", default="modern,legacy")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarize", type=Path, help="only print the table of a saved run")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(json.loads(args.summarize.read_text())))
        return 0
    code = dict(pair.split("=", 1) for pair in args.code.split(","))
    rows = run(code, [int(x) for x in args.sessions.split(",")], args.calls, args.repeats,
               args.eras.split(","))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
