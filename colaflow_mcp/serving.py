"""uvicorn glue: a graceful hub shutdown, WebSocket refusals that are not errors, and the
one uvicorn configuration (:func:`uvicorn_config`, used by ``serve`` and the tests).

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

from colaflow_mcp import logs
from colaflow_mcp.config import Settings
from colaflow_mcp.http_protocols import http_protocol

logger = logging.getLogger(__name__)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How the app is served: ``settings`` host/port, WebSocket and shutdown tuning."""
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "lifespan": "on", "log_config": None,
        "log_level": logs.split_levels(settings.log_level)[0],
        # Closes connections that never complete a request head (uvicorn has no bound).
        "http": http_protocol(settings),
        "ws_max_size": max(settings.hub_max_message_bytes * 4, 1 << 20),
        "ws": HubWebSocketProtocol,  # refusals without an ERROR log line (see its docstring)
        # Hub messages are small JSON: compression would cost ~45 KiB per idle socket.
        "ws_per_message_deflate": False,
        # SignalR has its own keep-alive and client timeout; protocol-level pings from
        # uvicorn on top would be a third kind of ping per idle connection.
        "ws_ping_interval": None,
        "timeout_graceful_shutdown": settings.http_graceful_shutdown_seconds,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class HubAwareServer(uvicorn.Server):
    """A ``uvicorn.Server`` that shuts the hub down gracefully before its connections."""

    def __init__(self, config: uvicorn.Config, hub_shutdown_seconds: float = 5.0) -> None:
        super().__init__(config)
        self.hub_shutdown_seconds = hub_shutdown_seconds

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then say where it listens: the bound address, so that
        ``--port 0`` logs the port the system chose, not 0."""
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                name = sock.getsockname()
                if isinstance(name, tuple):  # TCP; a UNIX socket's name is its path
                    host = f"[{name[0]}]" if ":" in name[0] else name[0]
                    logger.info("serving on http://%s:%d", host, name[1])

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the console's live streams, the MCP sessions' GET streams and the modern
        listen streams, close the hub's connections (Close with allowReconnect), then
        uvicorn's."""
        state = getattr(self.config.app, "state", None)
        console: Any = getattr(state, "console", None)
        if console is not None:
            await console.shutdown()  # sets an event: the streams end by themselves
        mcp: Any = getattr(state, "mcp", None)
        if mcp is not None:
            mcp.end_get_streams()  # legacy GET streams (the sessions end with the lifespan)
            mcp.end_listen_streams()  # modern listens, cut: their clients listen again
        hub: Any = getattr(state, "hub", None)
        if hub is not None:
            try:
                with anyio.move_on_after(self.hub_shutdown_seconds):
                    await hub.shutdown()
            except Exception:
                logger.exception("hub shutdown failed; connections are cut instead")
        await super().shutdown(sockets)


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol, minus the ERROR it logs after every refusal."""

    async def send(self, message: ASGISendEvent) -> None:
        """Send, and count a finished refusal as a finished handshake."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            # The refusal is on the wire and the socket closing: the handshake is over.
            self.handshake_complete = True
