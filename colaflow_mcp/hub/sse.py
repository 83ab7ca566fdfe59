"""Server-Sent Events transport (server to client; the client sends by POST)."""

from __future__ import annotations

import anyio
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from colaflow_mcp.hub.connection import HubConnection, Transport
from colaflow_mcp.hub.protocol import sse_event


class SseTransport:
    """Opens event streams for connections (their sends arrive as POSTs)."""

    def __init__(self, flush_grace_seconds: float) -> None:
        self.flush_grace_seconds = flush_grace_seconds

    async def stream(self, conn: HubConnection) -> Response:
        """The connection's event stream, or the status that refuses it."""
        if conn.closed:
            return PlainTextResponse("No Connection with that ID", status_code=404)
        if conn.transport not in (None, Transport.SSE):
            return PlainTextResponse("Cannot change transports mid-connection",
                                     status_code=400)
        if conn.stream_attached:
            return PlainTextResponse("An event stream is already open for this connection",
                                     status_code=409)
        conn.attach_event_stream()
        return _EventStream(conn, self.flush_grace_seconds)


class _EventStream(Response):
    """Streams the connection's frames as ``data:`` events until either side closes."""

    media_type = "text/event-stream"

    def __init__(self, conn: HubConnection, flush_grace_seconds: float) -> None:
        # No Content-Length: the body streams until either side closes.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.conn = conn
        self.flush_grace_seconds = flush_grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = self.conn
        writer_done = anyio.Event()

        async def writer() -> None:
            try:
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
                while True:
                    await conn.wait_outbound()
                    frames = conn.take()
                    if frames:
                        body = b"".join(sse_event(f.rstrip("\n")) for f in frames)
                        del frames
                        await send({"type": "http.response.body", "body": body,
                                    "more_body": True})
                        del body
                        # An empty chunk writes nothing but waits, as every send does,
                        # until the server's buffer is below its high-water mark: only
                        # then is the batch written for flow control's purposes.
                        await send({"type": "http.response.body", "body": b"",
                                    "more_body": True})
                        conn.written()
                    if conn.closed and not conn.queued:
                        break
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client is gone
            finally:
                writer_done.set()

        async def disconnect_listener() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    conn.close()
                    return

        async def watchdog() -> None:
            await conn.closed_event.wait()
            with anyio.move_on_after(self.flush_grace_seconds):
                await writer_done.wait()
            tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                tg.start_soon(disconnect_listener)
                tg.start_soon(watchdog)
        finally:
            conn.detach_event_stream()
