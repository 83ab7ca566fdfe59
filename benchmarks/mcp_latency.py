"""MCP measurements on 127.0.0.1: decision -> notifications/resources/updated latency, both eras.

    .venv/bin/python benchmarks/mcp_latency.py [--decisions 300] [--warmup 20] [--json out.json]

Starts ``colaflow-mcp serve`` (SQLite, in-process bus) as a subprocess on a free loopback
port, provisions a tenant, key, project and reviewer token with the CLI, then for each era
runs the official Python SDK client in this process:

- ``legacy``: ``mode="legacy"`` (initialize, GET stream, ``resources/subscribe``);
- ``modern``: 2026-07-28 ``subscriptions/listen`` (one listen stream per change).

One decision at a time: propose over MCP, subscribe, approve over REST (keep-alive httpx),
and record the client's receipt of the update. Reported per era:

- ``after_return``: receipt minus the moment the approve call returned (what the issue asks
  for; negative when the notification beats the HTTP response, which is common because the
  server hands the event to the session before it writes the approve response);
- ``request``: receipt minus the moment just before the approve call was sent (the
  reviewer's whole path: HTTP, conditional update, execution, commit, fan-out, SSE).

Everything stays on 127.0.0.1; the loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def http_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    """The HTTP client the SDK transport uses: our auth header, long reads for SSE."""
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (0-100)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(seconds: list[float]) -> dict[str, Any]:
    values = sorted(v * 1000.0 for v in seconds)
    return {"count": len(values), "p50": round(percentile(values, 50), 3),
            "p90": round(percentile(values, 90), 3), "p99": round(percentile(values, 99), 3),
            "max": round(values[-1], 3), "mean": round(sum(values) / len(values), 3)}


@dataclass
class Server:
    port: int
    api_key: str
    reviewer_token: str
    pid: int


@contextmanager
def running_server(workdir: Path) -> Iterator[Server]:
    """``colaflow-mcp serve`` on a free loopback port, with a tenant, key, project, token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLAFLOW_")}
    env.update(COLAFLOW_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
               COLAFLOW_JWT_SECRET="bench-" + uuid.uuid4().hex, COLAFLOW_LOG_LEVEL="warning",
               # All sessions (--idle-sessions too) use one key: lift the per-key cap.
               COLAFLOW_MCP_MAX_SESSIONS_PER_KEY="10000")
    cli = [sys.executable, "-m", "colaflow_mcp.cli"]

    def run(*args: str) -> str:
        return subprocess.run([*cli, *args], env=env, cwd=workdir, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    key = json.loads(run("keys", "create", "--tenant", "bench", "--json"))["key"]
    run("projects", "create", "--tenant", "bench", "--key", "WEB", "--name", "Website")
    token = run("token", "--tenant", "bench", "--user", "rita")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen([*cli, "serve", "--host", HOST, "--port", str(port)], env=env,
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # start-up poll of a subprocess: bounded, outside any test
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "server.log").read_text()[-4000:])
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield Server(port, key, token, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Receipts:
    """When each URI's update reached the client (perf_counter), with a wake-up per arrival."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._changed = anyio.Event()

    def record(self, uri: str) -> None:
        self.at.setdefault(uri, time.perf_counter())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, uri: str) -> float:
        while uri not in self.at:
            await self._changed.wait()
        return self.at[uri]

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.record(str(message.params.uri))


@asynccontextmanager
async def connect(url: str, key: str, legacy: bool, receipts: Receipts
                  ) -> AsyncIterator[Client]:
    async with http_client({"Authorization": f"Bearer {key}"}) as http:
        client = Client(streamable_http_client(url, http_client=http),
                        mode="legacy" if legacy else "auto",
                        message_handler=receipts.on_message if legacy else None, cache=None)
        async with client:
            yield client


async def run_era(era: str, port: int, key: str, token: str, decisions: int, warmup: int,
                  sessions: int) -> dict[str, Any]:
    """``sessions`` agents each watch one change per round; the reviewer approves them in turn."""
    url = f"http://{HOST}:{port}/mcp"
    legacy = era == "legacy"
    receipts = Receipts()
    total = warmup + decisions
    rounds = math.ceil(total / sessions)
    proposals: list[list[tuple[str, str]]] = [[] for _ in range(rounds)]
    round_ready = [anyio.Event() for _ in range(rounds)]
    approvals: list[tuple[float, float, str]] = []  # (sent, returned, uri) in order

    async def agent(j: int) -> None:
        async with connect(url, key, legacy, receipts) as client:
            for r in range(rounds):
                result = await client.call_tool(
                    "create_issue", {"project_key": "WEB", "title": f"bench {r}/{j}"})
                assert result.structured_content is not None, result.content
                change_id = result.structured_content["pendingChangeId"]
                uri = result.structured_content["resourceUri"]

                def watching(r: int = r, change_id: str = change_id, uri: str = uri) -> None:
                    proposals[r].append((change_id, uri))
                    if len(proposals[r]) == sessions:
                        round_ready[r].set()

                if legacy:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", MCPDeprecationWarning)
                        await client.session.subscribe_resource(uri)
                    watching()
                    await receipts.wait(uri)
                else:
                    async with client.listen(resource_subscriptions=[uri]) as sub, \
                            anyio.create_task_group() as tg:
                        async def pump(sub: Any = sub) -> None:
                            async for event in sub:
                                receipts.record(str(getattr(event, "uri", "")))

                        tg.start_soon(pump)
                        watching()
                        await receipts.wait(uri)
                        tg.cancel_scope.cancel()

    with anyio.fail_after(max(120.0, total * 0.5)):
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}",
                                     headers={"Authorization": f"Bearer {token}"}
                                     ) as reviewer, anyio.create_task_group() as tg:
            for j in range(sessions):
                tg.start_soon(agent, j)
            for r in range(rounds):
                await round_ready[r].wait()
                for change_id, uri in proposals[r]:
                    t0 = time.perf_counter()
                    resp = await reviewer.post(f"/api/mcp/pending-changes/{change_id}/approve")
                    t1 = time.perf_counter()
                    assert resp.status_code == 200, resp.text
                    approvals.append((t0, t1, uri))
                for _, uri in proposals[r]:
                    await receipts.wait(uri)
    measured = approvals[warmup:total]
    after_return = [receipts.at[uri] - t1 for _, t1, uri in measured]
    request = [receipts.at[uri] - t0 for t0, _, uri in measured]
    return {
        "era": era,
        "sessions": sessions,
        "decisions": len(measured),
        "after_return_ms": summarize_ms(after_return),
        "request_ms": summarize_ms(request),
        "notification_before_response": sum(1 for v in after_return if v < 0),
    }


class IdleSessions:
    """N legacy sessions over plain HTTP, each subscribed to its own change with its GET
    stream open: the server-side cost of waiting agents, and a burst of N decisions."""

    def __init__(self, port: int, key: str, token: str, count: int) -> None:
        self.port, self.key, self.token, self.count = port, key, token, count
        self.http = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", timeout=60,
            limits=httpx.Limits(max_connections=count + 64, max_keepalive_connections=64))
        self.change_ids: list[str] = []
        self.received: dict[str, float] = {}
        self.streams_open = 0
        self.all_open = anyio.Event()
        self.all_received = anyio.Event()

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.key}", "Accept": "application/json, "
             "text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        if session_id:
            h["Mcp-Session-Id"] = session_id
        return h

    async def one(self, i: int) -> None:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "idle", "version": "0"}}}
        r = await self.http.post("/mcp", json=init, headers=self.headers())
        sid = r.headers["mcp-session-id"]
        await self.http.post("/mcp", json={"jsonrpc": "2.0", "method":
                                           "notifications/initialized"},
                             headers=self.headers(sid))
        r = await self.http.post("/mcp", headers=self.headers(sid), json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "create_issue", "arguments": {"project_key": "WEB",
                                                      "title": f"idle {i}"}}})
        data = next(json.loads(line[5:]) for line in r.text.splitlines()
                    if line.startswith("data:") and line[5:].strip())
        change = data["result"]["structuredContent"]
        self.change_ids.append(change["pendingChangeId"])
        await self.http.post("/mcp", headers=self.headers(sid), json={
            "jsonrpc": "2.0", "id": 3, "method": "resources/subscribe",
            "params": {"uri": change["resourceUri"]}})
        async with self.http.stream("GET", "/mcp", headers=self.headers(sid)) as stream:
            self.streams_open += 1
            if self.streams_open == self.count:
                self.all_open.set()
            async for line in stream.aiter_lines():
                if "notifications/resources/updated" in line:
                    self.received[change["pendingChangeId"]] = time.perf_counter()
                    if len(self.received) == self.count:
                        self.all_received.set()
                    return

    async def burst(self) -> dict[str, Any]:
        """Approve every idle session's change back to back; time until all are told."""
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for chunk in range(0, len(self.change_ids), 16):
                async def approve(ids: list[str]) -> None:
                    for cid in ids:
                        r = await self.http.post(
                            f"/api/mcp/pending-changes/{cid}/approve",
                            headers={"Authorization": f"Bearer {self.token}"})
                        assert r.status_code == 200, r.text

                tg.start_soon(approve, self.change_ids[chunk:chunk + 16])
        t_approved = time.perf_counter()
        await self.all_received.wait()
        last = max(self.received.values())
        return {"decisions": len(self.change_ids), "approvals_s": round(t_approved - t0, 3),
                "all_notified_s": round(last - t0, 3),
                "last_notified_after_last_approval_ms": round((last - t_approved) * 1000, 3)}


def rss_mib(pid: int) -> float:
    import psutil  # type: ignore[import-untyped]

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| era | sessions | decisions | after approve returned p50 / p99 (ms) | approve sent "
        "-> notified p50 / p99 (ms) | notified before the response |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "burst" in r:
            continue
        a, q = r["after_return_ms"], r["request_ms"]
        lines.append(f"| {r['era']} | {r['sessions']} | {r['decisions']} | "
                     f"{a['p50']} / {a['p99']} | "
                     f"{q['p50']} / {q['p99']} | {r['notification_before_response']} |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp, \
            running_server(Path(tmp)) as server:
        idle: IdleSessions | None = None
        extra: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            if args.idle_sessions:
                idle = IdleSessions(server.port, server.api_key, server.reviewer_token,
                                    args.idle_sessions)
                before = rss_mib(server.pid)
                with anyio.fail_after(600):
                    for i in range(args.idle_sessions):
                        tg.start_soon(idle.one, i)
                    await idle.all_open.wait()
                after = rss_mib(server.pid)
                extra = {"idle_sessions": args.idle_sessions,
                         "server_rss_mib_before": round(before, 1),
                         "server_rss_mib_after": round(after, 1),
                         "kib_per_idle_session": round((after - before) * 1024
                                                       / args.idle_sessions, 1)}
            results = [await run_era(era, server.port, server.api_key,
                                     server.reviewer_token, args.decisions, args.warmup,
                                     sessions)
                       for sessions in args.sessions for era in args.eras]
            for r in results:
                r.update(extra)
            if idle is not None:
                with anyio.fail_after(600):
                    burst = await idle.burst()
                results.append({"burst": burst, **extra})
                await idle.http.aclose()
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--eras", nargs="+", default=["legacy", "modern"],
                        choices=["legacy", "modern"])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 100],
                        help="concurrent agent sessions per run (each watches one change)")
    parser.add_argument("--idle-sessions", type=int, default=0,
                        help="legacy sessions kept open (GET stream + one subscription) "
                             "during the runs, then decided in one burst")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = anyio.run(main_async, args)
    print(markdown(results))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
