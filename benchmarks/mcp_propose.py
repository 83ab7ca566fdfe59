"""MCP proposals: ``create_issue`` calls/s and server CPU per call, ours vs. the bare SDK.

    .venv/bin/python -m benchmarks.mcp_propose [--sessions 1,8] [--calls 1500] [--rounds 3]
                                               [--eras modern,legacy] [--out FILE]

Both servers run in their own processes, served by the same ``serve`` code: ours
(``colaflow-mcp serve``, SQLite, an agent key) and the peer (``benchmarks/mcp_peer.py``:
the SDK's ``MCPServer`` with one tool doing one aiosqlite INSERT, no auth). The client is
the official MCP Python SDK (``mcp.Client``) in a process of its own: N sessions, each
calling ``create_issue`` serially, all N at once. Per row, after a warm-up of 50 calls a
session: calls/s (wall), and **server CPU per call** (the server process's user+system
time over the measured calls, psutil) — the robust figure on a shared machine. Rounds
alternate which server goes first; the load average is recorded with every row.
``--profile DIR`` instead runs py-spy on the first of ``--servers`` during one measured
row (the last of ``--sessions``, the first of ``--eras``).
Everything stays on 127.0.0.1; loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.server import (
    HOST,
    REPO,
    Credentials,
    ServerUnderTest,
    bench_env,
    listening_port,
    running_server,
    wait_healthy,
)

WARMUP_CALLS = 50


# -- the client process -----------------------------------------------------------------------

async def _client(port: int, key: str, sessions: int, calls: int, era: str) -> None:
    """N SDK sessions; warm up, say READY, wait for a line on stdin, run, print the result."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.simplefilter("ignore", MCPDeprecationWarning)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                              timeout=httpx2.Timeout(60, read=300),
                              limits=httpx2.Limits(max_connections=None,
                                                   max_keepalive_connections=None))
    errors = 0

    async def call_many(client: Any, count: int, tag: str) -> None:
        nonlocal errors
        for i in range(count):
            result = await client.call_tool("create_issue", {
                "project_key": "WEB", "title": f"bench {tag} {i}",
                "description": "Made by the proposal benchmark."})
            if result.is_error:
                errors += 1
                if errors == 1:
                    print(f"tool error: {result.content}", file=sys.stderr)

    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(sessions):
            transport = streamable_http_client(f"http://{HOST}:{port}/mcp", http_client=http)
            clients.append(await stack.enter_async_context(
                Client(transport, mode="legacy" if era == "legacy" else "auto", cache=None)))
        await asyncio.gather(*(call_many(c, WARMUP_CALLS, f"w{n}")
                               for n, c in enumerate(clients)))
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(call_many(c, calls, f"s{n}") for n, c in enumerate(clients)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print("DONE " + json.dumps({"calls": calls * sessions, "wall": wall,
                                    "client_cpu": cpu, "errors": errors}), flush=True)
    await http.aclose()


# -- the orchestrator -------------------------------------------------------------------------

def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(server: ServerUnderTest, key: str, sessions: int, calls: int, era: str,
            during: Any = None) -> dict[str, Any]:
    """One row: a client process against ``server``; server CPU over the measured calls."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    client = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mcp_propose", "client", "--port", str(server.port),
         "--key", key, "--sessions", str(sessions), "--calls", str(calls), "--era", era],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert client.stdin is not None and client.stdout is not None
    try:
        line = client.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"client did not get ready: {line!r}")
        load0 = os.getloadavg()[0]
        spy = during() if during is not None else None
        cpu0 = _cpu(server.pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        line = client.stdout.readline()
        cpu = _cpu(server.pid) - cpu0
        if spy is not None:
            spy.wait(120)
        if not line.startswith("DONE "):
            raise RuntimeError(f"client failed: {line!r}")
        done = json.loads(line[5:])
        client.wait(60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    return {
        "sessions": sessions, "era": era, "calls": done["calls"], "errors": done["errors"],
        "calls_per_s": round(done["calls"] / done["wall"], 1),
        "server_cpu_ms_per_call": round(1000 * cpu / done["calls"], 3),
        "server_cpu_cores": round(cpu / done["wall"], 2),
        "client_cpu_ms_per_call": round(1000 * done["client_cpu"] / done["calls"], 3),
        "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


@contextmanager
def bare_peer(workdir: Path) -> Iterator[ServerUnderTest]:
    """The bare-SDK peer (``benchmarks/mcp_peer.py``) served like ours."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mcp_peer.log"
    env = bench_env(f"sqlite:///{workdir / 'unused.db'}", "unused-" + uuid.uuid4().hex)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.mcp_peer", "--db", str(workdir / "peer.db")],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        port = listening_port(proc, log_path)
        wait_healthy(port, proc, log_path)
        yield ServerUnderTest(proc, port, Credentials("none", "", ""), "", workdir, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def run(root: Path, sessions: list[int], calls: int, rounds: int, eras: list[str],
        servers: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for name in order:
            work = root / f"{name}-{r}"
            server_cm = running_server(work) if name == "ours" else bare_peer(work)
            with server_cm as server:
                for era in eras:
                    for n in sessions:
                        row = measure(server, server.creds.api_key, n, max(1, calls // n),
                                      era)
                        row.update(server=name, round=r)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: median over rounds per (era, sessions, server), and the ratio."""
    import statistics

    out = ["| era | sessions | ours calls/s | ours CPU ms/call | bare calls/s | "
           "bare CPU ms/call | CPU ratio (median of rounds) |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["era"], r["sessions"]) for r in rows})
    for era, n in keys:
        def pick(name: str, field: str, era: str = era, n: int = n) -> list[float]:
            return [r[field] for r in rows
                    if r["server"] == name and r["era"] == era and r["sessions"] == n]
        ours, bare = pick("ours", "server_cpu_ms_per_call"), pick("bare", "server_cpu_ms_per_call")
        med = statistics.median
        if not ours or not bare:
            continue
        # A round whose peer used less CPU than the clock can tell (psutil counts in ticks:
        # a few calls on a fast host read 0) has no ratio.
        ratios = [o / b for o, b in zip(ours, bare, strict=False) if b]
        ratio = (f"{med(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios
                 else "– (the peer's CPU read 0: too few calls to measure)")
        out.append(
            f"| {era} | {n} | {med(pick('ours', 'calls_per_s')):.0f} | {med(ours):.2f} | "
            f"{med(pick('bare', 'calls_per_s')):.0f} | {med(bare):.2f} | {ratio} |")
    return "\n".join(out)


def profile(root: Path, out: Path, sessions: int, calls: int, era: str, name: str) -> None:
    """py-spy (GIL samples) on a server (ours or the peer) during one measured row."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"profile-propose-{name}-{era}-{sessions}.txt"
    server_cm = running_server(root / name) if name == "ours" else bare_peer(root / name)
    with server_cm as server:
        def spy() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(server.pid), "--format", "raw", "--rate", "250", "--duration", "12",
                 "--output", str(target), "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        row = measure(server, server.creds.api_key, sessions, calls, era, during=spy)
        print(json.dumps(row))
    from benchmarks.profile import top

    print(top(target, 40))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mcp_propose",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="compare", choices=["compare", "client"])
    parser.add_argument("--sessions", default="1,8")
    parser.add_argument("--calls", type=int, default=1500, help="measured calls per row")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eras", default="modern,legacy")
    parser.add_argument("--servers", default="ours,bare", help="which, in round 0's order")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy our server into this folder")
    parser.add_argument("--port", type=int)
    parser.add_argument("--key")
    parser.add_argument("--era", default="modern")
    args = parser.parse_args()
    if args.mode == "client":
        asyncio.run(_client(args.port, args.key, int(args.sessions), args.calls, args.era))
        return 0
    sessions = [int(s) for s in args.sessions.split(",")]
    eras = args.eras.split(",")
    with tempfile.TemporaryDirectory(prefix="colaflow-propose-") as tmp:
        if args.profile:
            profile(Path(tmp), args.profile, sessions[-1], args.calls, eras[0],
                    args.servers.split(",")[0])
            return 0
        rows = run(Path(tmp), sessions, args.calls, args.rounds, eras,
                   args.servers.split(","))
    print(summarize(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
