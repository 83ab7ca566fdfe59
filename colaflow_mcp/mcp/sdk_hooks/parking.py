"""Hook 9 (see the package docstring): a legacy session's park state, the middleware
that keeps a session busy under a running handler, and what a parked transport holds."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final, Protocol

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.streamable_http import StreamableHTTPServerTransport

# Hook 9: a session with no request in flight but its GET stream for this long is parked.
# Long enough that an agent working in a session (a call every few seconds) never parks
# and un-parks per call; short against the idle timeout (30 min by default).
PARK_AFTER_SECONDS: Final = 10.0
PARK_TICK_SECONDS: Final = 1.0  # how often the parker looks (one task for all sessions)
# Where the transport's request puts the session's life, for ``SessionActivity``.
LIFE_SCOPE_KEY: Final = "colaflow.session_life"

LIVE, PARKING, PARKED, UNPARKING = "live", "parking", "parked", "unparking"


class SessionManager(Protocol):
    """What a session's life and its transport use of ``sessions.SessionManager``."""

    session_idle_timeout: float | None
    _idle: OrderedDict[str, float]  # live sessions with nothing in flight, oldest first
    _parked_idle: dict[str, float]  # parked ones with nothing in flight: idle deadline

    def _note_parked_idle(self, session_id: str, deadline: float) -> None: ...

    async def unpark(self, transport: StreamableHTTPServerTransport) -> None: ...


class SessionLife:
    """Hook 9: one legacy session's park state, kept on its transport for the session's
    life. ``busy`` counts what needs the SDK's session: requests in flight other than the
    GET stream and DELETE (POSTs, request-stream resumptions) and handlers still running
    (a handler outlives its POST if the client went away meanwhile)."""

    __slots__ = ("manager", "session_id", "state", "busy", "scope", "transition",
                 "connection", "saved")

    def __init__(self, manager: SessionManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.state = LIVE
        self.busy = 0
        self.scope: anyio.CancelScope | None = None  # the running life's own scope
        self.transition: anyio.Event | None = None  # exists while parking or un-parking
        self.connection: Connection | None = None  # the running life's
        # What the session negotiated, while parked: (client params, protocol version,
        # whether notifications/initialized came).
        self.saved: tuple[types.InitializeRequestParams | None, str, bool] | None = None

    def enter(self) -> None:
        if not self.busy:
            self.manager._idle.pop(self.session_id, None)
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        if not self.busy and self.state == LIVE:
            idle = self.manager._idle
            idle[self.session_id] = anyio.current_time()
            idle.move_to_end(self.session_id)

    def keep(self, connection: Connection) -> None:
        """Parking: keep what the session negotiated."""
        self.saved = (connection.client_params, connection.protocol_version,
                      connection.initialized.is_set())

    def restore(self, connection: Connection) -> None:
        """Un-parking: the new life's connection is initialized as the last one was."""
        saved, self.saved = self.saved, None
        if saved is None:
            return
        client_params, protocol_version, initialized = saved
        if client_params is not None:
            connection.client_params = client_params
        connection.protocol_version = protocol_version
        if initialized:
            connection.initialized.set()


class SessionActivity:
    """Hook 9: SDK server middleware counting a legacy session's running handlers as busy
    (a session is not parked under a handler whose POST has gone)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        scope = getattr(ctx.request, "scope", None)
        life = scope.get(LIFE_SCOPE_KEY) if isinstance(scope, dict) else None
        if not isinstance(life, SessionLife):
            return await call_next(ctx)
        life.enter()
        try:
            return await call_next(ctx)
        finally:
            life.leave()


_CLOSED: tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]] | None = None


def _closed_streams() -> tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]:
    """Hook 9: one closed pair of memory streams, shared by every parked transport."""
    global _CLOSED
    if _CLOSED is None:
        send, receive = anyio.create_memory_object_stream[Any](0)
        send.close()
        receive.close()
        _CLOSED = (send, receive)
    return _CLOSED


def life_of(transport: StreamableHTTPServerTransport | None) -> SessionLife | None:
    """Hook 9: the session's park state."""
    life = getattr(transport, "life", None)
    return life if isinstance(life, SessionLife) else None
