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
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.server import HOST, running_server  # noqa: E402
from benchmarks.stats import summarize_ms  # noqa: E402


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
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
        client = Client(streamable_http_client(url, http_client=http),
                        mode="legacy" if legacy else "auto",
                        message_handler=receipts.on_message if legacy else None, cache=None)
        async with client:
            yield client


async def run_era(era: str, port: int, key: str, token: str, decisions: int, warmup: int
                  ) -> dict[str, Any]:
    url = f"http://{HOST}:{port}/mcp"
    legacy = era == "legacy"
    receipts = Receipts()
    after_return: list[float] = []
    request: list[float] = []
    beaten = 0
    async with connect(url, key, legacy, receipts) as client, \
            httpx.AsyncClient(base_url=f"http://{HOST}:{port}",
                              headers={"Authorization": f"Bearer {token}"}) as reviewer:
        for i in range(warmup + decisions):
            result = await client.call_tool("create_issue",
                                            {"project_key": "WEB", "title": f"bench {i}"})
            assert result.structured_content is not None, result.content
            change_id = result.structured_content["pendingChangeId"]
            uri = result.structured_content["resourceUri"]

            async def decide(change_id: str, uri: str) -> tuple[float, float, float]:
                t0 = time.perf_counter()
                r = await reviewer.post(f"/api/mcp/pending-changes/{change_id}/approve")
                t1 = time.perf_counter()
                assert r.status_code == 200, r.text
                return t0, t1, await receipts.wait(uri)

            with anyio.fail_after(30):
                if legacy:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", MCPDeprecationWarning)
                        await client.session.subscribe_resource(uri)
                    t0, t1, t2 = await decide(change_id, uri)
                else:
                    async with client.listen(resource_subscriptions=[uri]) as sub, \
                            anyio.create_task_group() as tg:
                        async def pump() -> None:
                            async for event in sub:
                                receipts.record(str(getattr(event, "uri", "")))

                        tg.start_soon(pump)
                        t0, t1, t2 = await decide(change_id, uri)
                        tg.cancel_scope.cancel()
            if i >= warmup:
                after_return.append(t2 - t1)
                request.append(t2 - t0)
                beaten += t2 < t1
    return {
        "era": era,
        "decisions": decisions,
        "after_return_ms": summarize_ms(after_return),
        "request_ms": summarize_ms(request),
        "notification_before_response": beaten,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| era | decisions | after approve returned p50 / p99 (ms) | approve sent -> "
        "notified p50 / p99 (ms) | notified before the response |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        a, q = r["after_return_ms"], r["request_ms"]
        lines.append(f"| {r['era']} | {r['decisions']} | {a['p50']} / {a['p99']} | "
                     f"{q['p50']} / {q['p99']} | {r['notification_before_response']} |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp, \
            running_server(Path(tmp)) as server:
        return [await run_era(era, server.port, server.creds.api_key,
                              server.creds.reviewer_token, args.decisions, args.warmup)
                for era in args.eras]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--eras", nargs="+", default=["legacy", "modern"],
                        choices=["legacy", "modern"])
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
