"""The bare-SDK peer for the MCP proposal benchmark: the SDK's own ``MCPServer``, one tool.

``create_issue`` takes the same parameters as ours and does a single aiosqlite ``INSERT``
(one shared connection, WAL, one commit per call); no authentication, no diff, no audit,
no review queue. It is what a user gets from the SDK with the least code, so it is the
floor our per-call cost is compared with. Served by our own ``colaflow-mcp serve`` code with
only the app swapped (as ``sio_peer``), so both servers run with the same uvicorn options,
GC thresholds and logging; the SDK's session manager runs with its defaults (stateful,
SSE responses), the same transport mode as ours.
Run: ``python -m benchmarks.mcp_peer --db F [--port P]`` (port 0: any).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import aiosqlite
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from colaflow_mcp import cli


def build(db_path: str) -> Any:
    """The peer's ASGI app: ``/mcp`` (the SDK's app) and ``/health``."""
    server = MCPServer("bare-peer")
    state: dict[str, aiosqlite.Connection] = {}

    async def db() -> aiosqlite.Connection:
        if "db" not in state:
            conn = await aiosqlite.connect(db_path)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("CREATE TABLE IF NOT EXISTS issues (id TEXT PRIMARY KEY, "
                               "project_key TEXT, title TEXT, description TEXT, type TEXT, "
                               "priority TEXT, assignee TEXT, created_at TEXT)")
            state["db"] = conn
        return state["db"]

    @server.tool()
    async def create_issue(project_key: str, title: str, description: str = "",
                           type: str = "Task", priority: str = "Medium",
                           assignee: str | None = None) -> dict[str, Any]:
        """Create an issue (one INSERT)."""
        conn = await db()
        issue_id = uuid.uuid4().hex
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        await conn.execute("INSERT INTO issues VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (issue_id, project_key, title, description, type, priority,
                            assignee, at))
        await conn.commit()
        return {"id": issue_id, "status": "Created", "createdAt": at}

    mcp_app = server.streamable_http_app(
        streamable_http_path="/",
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    async def health(request: Request) -> Response:
        await db()
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's own lifespan never runs: enter the session manager here.
        async with server.session_manager.run():
            yield

    return Starlette(routes=[Route("/health", health), Mount("/mcp", mcp_app)],
                     lifespan=lifespan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    app = build(args.db)
    # As in sio_peer: `serve` builds its app with colaflow_mcp.app.create_app at call time.
    with patch("colaflow_mcp.app.create_app", lambda settings: app):
        return cli.main(["serve", "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
