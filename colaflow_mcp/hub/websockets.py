"""WebSockets transport: full duplex over one socket; a thin adapter over HubConnection."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from colaflow_mcp.hub.connection import HubConnection, Transport

if TYPE_CHECKING:
    from colaflow_mcp.hub.server import HubServer

logger = logging.getLogger(__name__)

FLUSH_GRACE_SECONDS = 1.0  # how long a closing connection may take to send its Close
CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL = 1002


class WebSocketTransport:
    def __init__(self, server: HubServer) -> None:
        self.server = server

    async def endpoint(self, websocket: WebSocket) -> None:
        server = self.server
        principal = await server.authenticate(websocket)
        if principal is None:
            await _deny(websocket, 401, "Unauthorized")
            return
        if websocket.query_params.get("id"):
            conn = server.connections.get(websocket.query_params["id"])
            if conn is None or conn.closed or not conn.owned_by(principal):
                await _deny(websocket, 404, "No Connection with that ID")
                return
            if conn.transport not in (None, Transport.WEBSOCKETS) or (
                conn.stream_attached and not conn.stateful
            ):
                await _deny(websocket, 409, "Connection already has a transport")
                return
            if conn.stream_attached and conn.supersede is not None:
                # A stateful client is back while its old socket looks alive (half-open
                # TCP): the new socket wins.
                conn.supersede()
        else:
            if server.closing:
                await _deny(websocket, 503, "Server is shutting down")
                return
            conn = server.create_connection(principal, 1)  # skip-negotiation
        # Only a stateful-reconnect connection outlives its socket and may come back.
        resuming = conn.transport is Transport.WEBSOCKETS and conn.stateful
        conn.attach(Transport.WEBSOCKETS)
        conn.ws_generation += 1
        generation = conn.ws_generation
        conn.stream_attached = True
        conn.detached_since = None
        await websocket.accept()
        if resuming:
            logger.info("hub connection %s resumed (stateful reconnect)", conn.connection_id)
            conn.resume()
        try:
            await self._run(websocket, conn, generation)
        finally:
            # A superseded socket leaves the connection to the newer one.
            if conn.ws_generation == generation:
                conn.stream_attached = False
                conn.supersede = None
                if conn.stateful and not conn.closed and not server.closing:
                    conn.detached_since = time.monotonic()  # the disconnect timeout starts
                else:
                    conn.close()

    async def _run(self, websocket: WebSocket, conn: HubConnection, generation: int) -> None:
        writer_done = anyio.Event()

        async def reader() -> None:
            max_bytes = conn.limits.max_message_bytes
            try:
                while not conn.closed:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    text = message.get("text")
                    if text is None:
                        raw = message.get("bytes") or b""
                        if len(raw) > max_bytes * 4:
                            conn.too_large = True
                            conn.close("Connection closed with an error: message too large")
                            break
                        try:
                            text = raw.decode("utf-8")
                        except UnicodeDecodeError:
                            conn.close("Connection closed with an error: invalid UTF-8")
                            break
                    await conn.receive(text)
            except WebSocketDisconnect:
                pass
            if conn.ws_generation != generation or (conn.stateful and not conn.closed):
                tg.cancel_scope.cancel()  # keep the connection: the client may come back
            else:
                conn.close()

        async def writer() -> None:
            try:
                while True:
                    await conn.wait_outbound()
                    for text in conn.take():
                        await websocket.send_text(text)
                    text = ""  # an idle connection keeps no copy of its last message
                    if conn.closed and not conn.queued:
                        break
                if websocket.application_state is WebSocketState.CONNECTED:
                    code = CLOSE_TOO_BIG if conn.too_large else CLOSE_NORMAL
                    await websocket.close(code)
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the peer is gone
            finally:
                writer_done.set()

        async def watchdog() -> None:
            # A stalled client can block a send forever: once the connection is closed,
            # allow a moment to flush the Close message, then tear the socket down.
            await conn.closed_event.wait()
            with anyio.move_on_after(FLUSH_GRACE_SECONDS):
                await writer_done.wait()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            conn.supersede = tg.cancel_scope.cancel
            tg.start_soon(reader)
            tg.start_soon(writer)
            tg.start_soon(watchdog)


async def _deny(websocket: WebSocket, status: int, detail: str) -> None:
    """Answer the upgrade request with a plain HTTP status (before any connection)."""
    await websocket.send_denial_response(
        PlainTextResponse(detail, status_code=status, headers={"Cache-Control": "no-store"})
    )
