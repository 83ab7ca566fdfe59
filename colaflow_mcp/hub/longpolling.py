"""Long Polling transport: GET polls (held up to ``hub_long_poll_seconds``), DELETE ends."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from colaflow_mcp.hub.connection import HubConnection, Transport

if TYPE_CHECKING:
    from colaflow_mcp.hub.server import HubServer

TEXT = "text/plain; charset=utf-8"
NO_STORE = {"Cache-Control": "no-cache, no-store"}


class LongPollingTransport:
    def __init__(self, server: HubServer) -> None:
        self.server = server

    async def poll(self, request: Request, conn: HubConnection) -> Response:
        if conn.transport not in (None, Transport.LONG_POLLING):
            return PlainTextResponse("Cannot change transports mid-connection",
                                     status_code=400)
        if conn.transport is None:
            if conn.closed:
                return Response(status_code=204)
            # The first poll only establishes the transport; it answers at once.
            conn.attach(Transport.LONG_POLLING)
            conn.detached_since = time.monotonic()
            return Response(status_code=200, media_type=TEXT, headers=NO_STORE)

        conn.poll_generation += 1
        generation = conn.poll_generation
        conn.wake()  # a poll still held is superseded: it answers 204
        conn.poll_active = True
        conn.detached_since = None
        conn.last_received = time.monotonic()
        try:
            with anyio.move_on_after(self.server.settings.hub_long_poll_seconds):
                while True:
                    if generation != conn.poll_generation:
                        return Response(status_code=204, headers=NO_STORE)
                    frames = conn.take()
                    conn.written()  # the response is the transport's buffer now
                    if frames:
                        return Response("".join(frames), status_code=200, media_type=TEXT,
                                        headers=NO_STORE)
                    if conn.closed:
                        self.server.forget(conn)
                        return Response(status_code=204, headers=NO_STORE)
                    await conn.wait_outbound()
            # Held long enough with nothing to say: the client polls again.
            return Response(status_code=200, media_type=TEXT, headers=NO_STORE)
        finally:
            if generation == conn.poll_generation:
                conn.poll_active = False
                conn.detached_since = time.monotonic()

    async def delete(self, conn: HubConnection) -> Response:
        """End a long-polling connection; its held poll answers 204."""
        if conn.transport is not Transport.LONG_POLLING:
            return PlainTextResponse("Received DELETE request for unsupported transport",
                                     status_code=400)
        conn.close(send_close=False)
        conn.take()
        conn.written()
        if not conn.poll_active:
            self.server.forget(conn)
        return PlainTextResponse("", status_code=202)
