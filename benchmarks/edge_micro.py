"""The HTTP edge of an approval in-process: the app's ASGI callable, no sockets.

``python -m benchmarks.edge_micro [--approvals 3000] [--inflight 8] [--stub]
[--postgres-url URL]``: builds the whole app (``create_app``, lifespan running, SQLite in a
temporary folder unless ``--postgres-url``), proposes ``--approvals`` changes, then sends
``POST /api/mcp/pending-changes/{id}/approve`` for each straight to the ASGI app with
``--inflight`` at a time and prints approvals/s and this process's CPU per approval
(worker threads included; no uvicorn, no socket writes, nobody subscribed).

``--stub``: the change service's ``approve`` answers with an already decided change
without touching the database, so what is left is the edge alone: middleware, routing,
credential check, body, the answer's JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.audit_micro import _drop_pg, _pg
from colaflow_mcp.app import create_app
from colaflow_mcp.config import Settings
from colaflow_mcp.domain import admin


def _scope(path: str, token: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode()),
                        (b"content-length", b"0")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80), "state": {}}


async def _call(app: Any, scope: dict[str, Any]) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect while the answer is pending
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def run(url: str, approvals: int, inflight: int, stub: bool) -> dict[str, Any]:
    settings = Settings(database_url=url, jwt_secret="edge-micro-" + uuid.uuid4().hex)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        tenant = await admin.get_or_create_tenant(runtime.db, "acme")
        await admin.create_project_direct(runtime.db, tenant.id, "WEB", "Website")
        agent = await runtime.auth.authenticate(
            (await admin.create_api_key(runtime.db, tenant, "agent"))[1])
        token = runtime.tokens.issue(tenant, "alice")
        count = approvals + 1 if stub else approvals
        ids = [str((await runtime.changes.propose(
            agent, "create_issue", {"project_key": "WEB", "title": f"t{i}"})).id)
            for i in range(count)]
        if stub:  # one real decision, then every answer is that change
            reviewer = await runtime.auth.authenticate(token)
            decided = await runtime.changes.approve(reviewer, ids.pop())

            async def approve(*_: Any, **__: Any) -> Any:
                return decided

            runtime.changes.approve = approve
        assert await _call(app, _scope(f"/api/mcp/pending-changes/{ids.pop()}/approve",
                                       token)) == 200  # warm
        queue = list(ids)
        statuses: list[int] = []

        async def lane() -> None:
            while queue:
                cid = queue.pop()
                statuses.append(await _call(
                    app, _scope(f"/api/mcp/pending-changes/{cid}/approve", token)))

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    ok = statuses.count(200)
    return {"approvals": ok, "failed": len(statuses) - ok, "stub": stub,
            "approvals_per_s": round(ok / wall, 1),
            "cpu_ms_per_approval": round(cpu * 1000 / max(1, ok), 4)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n = args.approvals + 1  # one more, to warm up
    if args.postgres_url:  # a database of its own, dropped after
        name, url = await _pg(args.postgres_url)
        try:
            return await run(url, n, args.inflight, args.stub)
        finally:
            await _drop_pg(args.postgres_url, name)
    with tempfile.TemporaryDirectory() as tmp:
        return await run(f"sqlite:///{Path(tmp) / 'edge.db'}", n, args.inflight, args.stub)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_micro",
                                     description=__doc__)
    parser.add_argument("--approvals", type=int, default=3000)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--stub", action="store_true")
    parser.add_argument("--postgres-url", default="")
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()
