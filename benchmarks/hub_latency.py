"""Hub measurements on 127.0.0.1: decision->event latency per transport, RSS per connection.

    .venv/bin/python benchmarks/hub_latency.py [--decisions 200] [--connections 1000]

Starts ``colaflow-mcp serve`` (SQLite, in-process bus) on a free loopback port, makes a
tenant, key, project and reviewer token with the CLI, then:

1. Latency, with the server in a thread of this process (so the moment of the local fan-out
   can be stamped): for each transport (WebSockets, ServerSentEvents, LongPolling), the
   official ``@microsoft/signalr`` client (tests/js/hub_client.mjs under node) subscribes
   to one change at a time; the benchmark approves it over REST and records
   - ``request``: from just before the approve POST to the client's receipt of the event
     (the whole path: HTTP, conditional update, execution, commit, fan-out, transport);
   - ``commit``: from the fan-out right after the commit (``Notifier.announce`` calling
     ``dispatch``) to the client's receipt in node.
2. Memory, with the server as its own ``colaflow-mcp serve`` process: opens N raw WebSocket
   connections (handshake done, one subscription each) and reports the server's RSS growth
   divided by N.

Everything stays on 127.0.0.1; loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "tests" / "js"
RS = "\x1e"
TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")


SERVE_WITH_WS_IMPL = """
import sys, uvicorn
from colaflow_mcp.app import create_app
from colaflow_mcp.config import Settings
port, impl, deflate = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "on"
uvicorn.run(create_app(Settings.from_env()), host="127.0.0.1", port=port, ws=impl,
            ws_per_message_deflate=deflate, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "colaflow_mcp.cli", *args, "--json"],
                          env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(done.stdout))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Node:
    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.out = TextReceiveStream(process.stdout)
        self.buffer = ""
        self.lines: list[dict[str, Any]] = []

    async def send(self, **cmd: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(cmd) + "\n").encode())

    async def wait_for(self, key: str, value: Any) -> dict[str, Any]:
        with anyio.fail_after(30):
            while True:
                for i, line in enumerate(self.lines):
                    if line.get(key) == value:
                        return self.lines.pop(i)
                self.buffer += await self.out.receive()
                *done, self.buffer = self.buffer.split("\n")
                self.lines.extend(json.loads(d) for d in done if d.strip())

    async def wait_event(self, change_id: str) -> dict[str, Any]:
        with anyio.fail_after(30):
            while True:
                for i, line in enumerate(self.lines):
                    if "event" in line and line["payload"]["pendingChangeId"] == change_id:
                        return self.lines.pop(i)
                self.buffer += await self.out.receive()
                *done, self.buffer = self.buffer.split("\n")
                self.lines.extend(json.loads(d) for d in done if d.strip())


class ThreadServer:
    """The app under uvicorn in a thread, with ``dispatch`` stamped per change id."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        import threading

        import uvicorn

        from colaflow_mcp.app import create_app
        from colaflow_mcp.config import Settings

        self.stamps: dict[str, float] = {}
        settings = Settings.from_env(env, host="127.0.0.1", port=port, log_level="warning")
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        notifier = self.app.state.runtime.notifier
        original = notifier.dispatch

        def stamped(event: Any) -> int:
            self.stamps.setdefault(event.change_id, time.time() * 1000)
            return int(original(event))

        notifier.dispatch = stamped

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


async def latency(base: str, key: str, token: str, transport: str, n: int,
                  stamps: dict[str, float]) -> dict[str, Any]:
    agent = {"Authorization": f"Bearer {key}"}
    reviewer = {"Authorization": f"Bearer {token}"}
    process = await anyio.open_process(
        ["node", str(JS_DIR / "hub_client.mjs"), f"{base}/hubs/mcp", key, transport],
        cwd=JS_DIR, stderr=None)
    node = Node(process)
    request_ms: list[float] = []
    commit_ms: list[float] = []
    try:
        await node.wait_for("state", "connected")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for i in range(n + 5):  # the first 5 warm up
                r = await http.post("/api/mcp/pending-changes", headers=agent, json={
                    "tool": "create_issue",
                    "arguments": {"project_key": "BEN", "title": f"bench {transport} {i}"}})
                r.raise_for_status()
                cid = r.json()["id"]
                await node.send(cmd="subscribe", id=cid)
                await node.wait_for("subscribed", cid)
                url = f"/api/mcp/pending-changes/{cid}/approve"

                async def approve(url: str = url) -> None:
                    (await http.post(url, headers=reviewer)).raise_for_status()

                t0 = time.time() * 1000
                async with anyio.create_task_group() as tg:
                    tg.start_soon(approve)
                    event = await node.wait_event(cid)
                if i < 5:
                    continue
                request_ms.append(event["at"] - t0)
                commit_ms.append(event["at"] - stamps[cid])
        await node.send(cmd="stop")
        with anyio.fail_after(10):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    return {
        "transport": transport, "n": len(request_ms),
        "request_p50": statistics.median(request_ms), "request_p99": pct(request_ms, 0.99),
        "commit_p50": statistics.median(commit_ms), "commit_p99": pct(commit_ms, 0.99),
    }


async def memory(base: str, key: str, pid: int, n: int) -> dict[str, Any]:
    ws_url = base.replace("http://", "ws://") + f"/hubs/mcp?access_token={key}"
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/mcp/pending-changes", headers={
            "Authorization": f"Bearer {key}"}, json={
            "tool": "create_issue", "arguments": {"project_key": "BEN", "title": "idle"}})
        cid = r.json()["id"]
    sockets: list[ClientConnection] = []

    async def open_one() -> None:
        ws = await connect(ws_url, open_timeout=30, ping_interval=None)
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        assert (await ws.recv()) == "{}" + RS
        await ws.send(json.dumps({"type": 1, "invocationId": "1",
                                  "target": "SubscribeToPendingChange",
                                  "arguments": [cid]}) + RS)
        reply = await ws.recv()
        assert '"result"' in str(reply), reply
        sockets.append(ws)

    for _ in range(20):  # warm up allocators and code paths
        await open_one()
    for ws in sockets:
        await ws.close()
    sockets.clear()
    before = rss_kib(pid)
    for start in range(0, n, 50):
        async with anyio.create_task_group() as tg:
            for _ in range(min(50, n - start)):
                tg.start_soon(open_one)
    after = rss_kib(pid)
    for ws in sockets:
        await ws.close()
    return {"connections": n, "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_connection": (after - before) / n}


async def wait_healthy(base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):  # up to ~20 s for start-up
            try:
                if (await http.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.05)
    raise RuntimeError("server did not become healthy")


async def main_async(args: argparse.Namespace) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    env = {**os.environ, "COLAFLOW_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
           "COLAFLOW_JWT_SECRET": "bench-" + "s" * 40, "COLAFLOW_LOG_LEVEL": "warning"}
    key = cli(env, "keys", "create", "--tenant", "bench")["key"]
    cli(env, "projects", "create", "--tenant", "bench", "--key", "BEN", "--name", "Bench")
    token = cli(env, "token", "--tenant", "bench", "--user", "bench")["token"]

    results = []
    if args.decisions > 0:
        port = free_port()
        threaded = ThreadServer(env, port)
        await anyio.to_thread.run_sync(threaded.start)
        try:
            for transport in args.transports:
                result = await latency(f"http://127.0.0.1:{port}", key, token, transport,
                                       args.decisions, threaded.stamps)
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            await anyio.to_thread.run_sync(threaded.stop)

    port = free_port()
    if args.ws_impl or args.no_deflate:  # compare uvicorn's WebSocket set-ups
        command = [sys.executable, "-c", SERVE_WITH_WS_IMPL, str(port),
                   args.ws_impl or "auto", "off" if args.no_deflate else "on"]
    else:
        command = [sys.executable, "-m", "colaflow_mcp.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning"]
    server = await anyio.open_process(command, env=env, cwd=ROOT, stdout=None, stderr=None)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base)
        mem = await memory(base, key, server.pid, args.connections)
        mem["server"] = (f"uvicorn ws={args.ws_impl or 'auto'} per-message-deflate="
                         f"{'off' if args.no_deflate else 'on'}" if command[1] == "-c"
                         else "colaflow-mcp serve")
        print(json.dumps(mem), flush=True)
    finally:
        server.terminate()
        with anyio.fail_after(15):
            await server.wait()

    print()
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("| transport | decisions | approve request -> event p50 / p99 (ms) |"
          " commit (fan-out) -> event p50 / p99 (ms) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['transport']} | {r['n']} | {r['request_p50']:.1f} / "
              f"{r['request_p99']:.1f} | {r['commit_p50']:.2f} / {r['commit_p99']:.2f} |")
    print(f"\n{mem['server']}: RSS {mem['rss_before_mib']:.1f} MiB -> "
          f"{mem['rss_after_mib']:.1f} MiB with {mem['connections']} idle WebSocket connections = "
          f"{mem['kib_per_connection']:.1f} KiB per connection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--transports", nargs="*", default=list(TRANSPORTS))
    parser.add_argument("--ws-impl", choices=["websockets", "websockets-sansio", "wsproto"],
                        help="serve with this uvicorn WebSocket implementation (memory only)")
    parser.add_argument("--no-deflate", action="store_true",
                        help="serve without permessage-deflate (memory only)")
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
