"""uvicorn glue: a graceful hub shutdown, and WebSocket refusals that are not errors.

On shutdown uvicorn closes every WebSocket with code 1012 and waits for streaming responses
(SSE, held long polls) before the app's lifespan ends, so ``HubServer.shutdown`` would run
too late for anyone to hear the Close message with ``allowReconnect``. This server runs it
first.

The hub refuses a WebSocket upgrade (401, 404, 409, 429, 503) with a plain HTTP response,
through the ASGI ``websocket.http.response`` extension. uvicorn's default WebSocket protocol
(``websockets-sansio``, chosen whenever ``websockets`` is installed) sends that response but
never marks the handshake done, so each refusal also logged ``ERROR ASGI callable returned
without completing handshake`` (uvicorn's wsproto protocol marks it; upstream:
Kludex/uvicorn#3138). :class:`HubWebSocketProtocol` marks it. It needs uvicorn 0.52.1 or
later, whose ``websockets-sansio`` waits for the socket to drain before each send: the
hub's flow control and its bound on what a slow client costs rely on that wait.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

HUB_SHUTDOWN_SECONDS = 5.0


class HubAwareServer(uvicorn.Server):
    """A ``uvicorn.Server`` that shuts the hub down gracefully before its connections."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        hub: Any = getattr(getattr(self.config.app, "state", None), "hub", None)
        if hub is not None:
            try:
                with anyio.move_on_after(HUB_SHUTDOWN_SECONDS):
                    await hub.shutdown()
            except Exception:
                logger.exception("hub shutdown failed; connections are cut instead")
        await super().shutdown(sockets)


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol, minus the ERROR it logs after every refusal."""

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            # The refusal is on the wire and the socket closing: the handshake is over.
            self.handshake_complete = True
