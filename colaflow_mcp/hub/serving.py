"""uvicorn glue: let the hub close its connections before uvicorn cuts them on shutdown.

On shutdown uvicorn closes every WebSocket with code 1012 and waits for streaming responses
(SSE, held long polls) before the app's lifespan ends, so ``HubServer.shutdown`` would run
too late for anyone to hear the Close message with ``allowReconnect``. This server runs it
first.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import uvicorn

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
