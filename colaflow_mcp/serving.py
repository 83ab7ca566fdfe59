"""uvicorn glue: let the hub close its connections before uvicorn cuts them on shutdown.

On shutdown uvicorn closes every WebSocket with code 1012 and waits for streaming responses
(SSE, held long polls) before the app's lifespan ends, so ``HubServer.shutdown`` would run
too late for anyone to hear the Close message with ``allowReconnect``. This server runs it
first. :func:`uvicorn_config` is the one uvicorn configuration (``serve`` and the tests).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import uvicorn

from colaflow_mcp import logs
from colaflow_mcp.config import Settings

logger = logging.getLogger(__name__)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How the app is served: ``settings`` host/port, WebSocket and shutdown tuning."""
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "lifespan": "on", "log_config": None,
        "log_level": logs.split_levels(settings.log_level)[0],
        "ws_max_size": max(settings.hub_max_message_bytes * 4, 1 << 20),
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the hub's connections (Close with allowReconnect), then uvicorn's."""
        hub: Any = getattr(getattr(self.config.app, "state", None), "hub", None)
        if hub is not None:
            try:
                with anyio.move_on_after(self.hub_shutdown_seconds):
                    await hub.shutdown()
            except Exception:
                logger.exception("hub shutdown failed; connections are cut instead")
        await super().shutdown(sockets)
