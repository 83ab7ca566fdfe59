"""Long Polling transport: GET polls (held up to ``hub_long_poll_seconds``), DELETE ends."""

from __future__ import annotations

import anyio
from starlette.responses import PlainTextResponse, Response

from colaflow_mcp.http import NO_STORE
from colaflow_mcp.hub.connection import HubConnection, Transport
from colaflow_mcp.hub.registry import Connections

TEXT = "text/plain; charset=utf-8"


class LongPollingTransport:
    """Answers polls and DELETEs of long-polling connections."""

    def __init__(self, registry: Connections, long_poll_seconds: float) -> None:
        self.registry = registry
        self.long_poll_seconds = long_poll_seconds

    async def poll(self, conn: HubConnection) -> Response:
        """The first poll answers at once; later ones are held until there is news."""
        if conn.transport not in (None, Transport.LONG_POLLING):
            return PlainTextResponse("Cannot change transports mid-connection",
                                     status_code=400)
        if conn.transport is None:
            if conn.closed:
                return Response(status_code=204)
            # The first poll only establishes the transport; it answers at once.
            conn.start_long_polling()
            return Response(status_code=200, media_type=TEXT, headers=NO_STORE)

        generation = conn.begin_poll()  # a poll still held is superseded: it answers 204
        try:
            with anyio.move_on_after(self.long_poll_seconds):
                while True:
                    if conn.poll_superseded(generation):
                        return Response(status_code=204, headers=NO_STORE)
                    frames = conn.take()
                    conn.written()  # the response is the transport's buffer now
                    if frames:
                        return Response("".join(frames), status_code=200, media_type=TEXT,
                                        headers=NO_STORE)
                    if conn.closed:
                        self.registry.forget(conn)
                        return Response(status_code=204, headers=NO_STORE)
                    await conn.wait_outbound()
            # Held long enough with nothing to say: the client polls again.
            return Response(status_code=200, media_type=TEXT, headers=NO_STORE)
        finally:
            conn.end_poll(generation)

    async def delete(self, conn: HubConnection) -> Response:
        """End a long-polling connection; its held poll answers 204."""
        if conn.transport is not Transport.LONG_POLLING:
            return PlainTextResponse("Received DELETE request for unsupported transport",
                                     status_code=400)
        conn.close(send_close=False)
        conn.take()
        conn.written()
        if not conn.poll_active:
            self.registry.forget(conn)
        return PlainTextResponse("", status_code=202)
