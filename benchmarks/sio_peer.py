"""The peer for scenario 5: a minimal python-socketio AsyncServer, as a user would build it.

Rooms per change; ``subscribe`` joins the room (and answers at once if already decided); a
REST decision (``POST /decide/{id}/approve|reject``, reviewer bearer token) does one
conditional ``UPDATE … WHERE status = 'Pending'`` in SQLite and emits to the room, so the
trigger matches ours. It is served by our own ``colaflow-mcp serve`` code with only the app
swapped, so both servers run with the same settings (GC thresholds, uvicorn options — no
WebSocket protocol pings, no per-message deflate — and logging).
Run: ``python -m benchmarks.sio_peer --port P --db F --key K --token T`` (port 0: any).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import aiosqlite
import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from colaflow_mcp import cli

TARGETS = {"Approved": "PendingChangeApproved", "Rejected": "PendingChangeRejected"}


def build(db_path: str, api_key: str, reviewer_token: str) -> Any:
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
    state: dict[str, aiosqlite.Connection] = {}

    async def db() -> aiosqlite.Connection:
        if "db" not in state:
            conn = await aiosqlite.connect(db_path)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("CREATE TABLE IF NOT EXISTS changes (id TEXT PRIMARY KEY, "
                               "status TEXT NOT NULL, decided_by TEXT, reason TEXT, "
                               "decided_at TEXT)")
            state["db"] = conn
        return state["db"]

    def event_of(row: tuple[Any, ...]) -> dict[str, Any]:
        cid, status, by, reason, at = row
        payload = {"pendingChangeId": cid, "status": status, "toolName": "create_issue",
                   "timestamp": at}
        if status == "Approved":
            payload.update(approvedBy=by, executionResult={"success": True})
        else:
            payload.update(reason=reason, rejectedBy=by)
        return payload

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        query = environ.get("QUERY_STRING", "")
        return f"access_token={api_key}" in query.split("&")

    async def subscribe(sid: str, change_id: str) -> dict[str, Any]:
        await sio.enter_room(sid, change_id)
        conn = await db()
        async with conn.execute("SELECT id, status, decided_by, reason, decided_at FROM "
                                "changes WHERE id = ?", (change_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            await sio.leave_room(sid, change_id)
            return {"error": "pending change not found"}
        if row[1] != "Pending":
            await sio.emit(TARGETS[row[1]], event_of(tuple(row)), to=sid)
        return {"pendingChangeId": row[0], "status": row[1]}

    sio.on("connect", connect)
    sio.on("subscribe", subscribe)

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {reviewer_token}"

    async def decide(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        cid, verb = request.path_params["id"], request.path_params["verb"]
        status = {"approve": "Approved", "reject": "Rejected"}.get(verb)
        if status is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        body = await request.body()
        reason = json.loads(body).get("reason") if body else None
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        conn = await db()
        cur = await conn.execute(
            "UPDATE changes SET status = ?, decided_by = 'rita', reason = ?, decided_at = ? "
            "WHERE id = ? AND status = 'Pending'", (status, reason, at, cid))
        await conn.commit()
        if cur.rowcount != 1:
            return JSONResponse({"error": "conflict"}, status_code=409)
        payload = event_of((cid, status, "rita", reason, at))
        await sio.emit(TARGETS[status], payload, room=cid)
        return JSONResponse(payload)

    async def seed(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        ids = (await request.json())["ids"]
        conn = await db()
        await conn.executemany("INSERT INTO changes (id, status) VALUES (?, 'Pending')",
                               [(i,) for i in ids])
        await conn.commit()
        return JSONResponse({"seeded": len(ids)})

    async def health(request: Request) -> Response:
        await db()
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[
        Route("/health", health), Route("/seed", seed, methods=["POST"]),
        Route("/decide/{id}/{verb}", decide, methods=["POST"]),
    ])
    return socketio.ASGIApp(sio, other_asgi_app=app)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    app = build(args.db, args.key, args.token)
    # `colaflow-mcp serve` builds its app with colaflow_mcp.app.create_app at call time:
    # swap in the peer and let our serve path do everything else exactly as for ours. (If
    # that ever stops working, our hub would be served here and the peer's Socket.IO agents
    # could not connect: tests/bench would fail.)
    with patch("colaflow_mcp.app.create_app", lambda settings: app):
        return cli.main(["serve", "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
