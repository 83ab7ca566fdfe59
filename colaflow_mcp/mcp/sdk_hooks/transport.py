"""Hooks 5 to 8 (see the package docstring): the session's event store, its GET stream
served from the store, and the SDK's transport that serves it (and un-parks, hook 9)."""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    EventMessage,
    StreamableHTTPServerTransport,
)
from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME, SessionEventStore
from colaflow_mcp.mcp.get_stream import GetStream
from colaflow_mcp.mcp.sdk_hooks.parking import LIFE_SCOPE_KEY, LIVE, PARKED, life_of


def session_event_store(transport: StreamableHTTPServerTransport) -> SessionEventStore | None:
    """Hook 5: the session's own event store."""
    store = transport._event_store
    return store if isinstance(store, SessionEventStore) else None


def serve_get_from_store(scope: Scope) -> None:
    """Hook 6: a GET without ``Last-Event-ID`` gets ours, so the store serves it (resuming
    after what the session's earlier GET streams were sent, so nothing sent while none was
    open is lost). Changes ``scope`` itself: the endpoint's own copy, held as long as the
    stream is open (one copy per idle session, not two)."""
    header = LAST_EVENT_ID_HEADER.encode()
    if any(k == header and v for k, v in scope["headers"]):
        return
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != header]
    scope["headers"].append((header, GET_STREAM_RESUME.encode()))


def disable_sse_ping_tasks() -> None:
    """Hook 7: no per-stream ping task in the SDK's SSE responses (the endpoint pings them
    all from one task). Process-wide; the SDK is sse-starlette's only user here."""
    EventSourceResponse.DEFAULT_PING_INTERVAL = 0


class LeanGetTransport(StreamableHTTPServerTransport):
    """Hook 8: the SDK's transport, with GET streams served by ``get_stream.GetStream``;
    hook 9: a request that needs the SDK's session un-parks it first."""

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        life = life_of(self)
        if life is None:
            await super().handle_request(scope, receive, send)
            return
        manager = life.manager
        manager._parked_idle.pop(life.session_id, None)
        if scope["method"] == "DELETE" or _is_get_stream(scope):
            try:
                await super().handle_request(scope, receive, send)
            finally:
                if life.state == PARKED and not self._requests_in_flight:
                    timeout = manager.session_idle_timeout
                    if timeout is not None:
                        manager._note_parked_idle(life.session_id,
                                                  anyio.current_time() + timeout)
            return
        life.enter()
        try:
            if life.state != LIVE:
                await manager.unpark(self)
            scope[LIFE_SCOPE_KEY] = life
            await super().handle_request(scope, receive, send)
        finally:
            life.leave()

    async def _replay_events(self, last_event_id: str, request: Request, send: Send) -> None:
        store = session_event_store(self)
        after = store.get_stream_start(last_event_id) if store is not None else None
        if store is None or after is None:
            await super()._replay_events(last_event_id, request, send)
            return
        stream = GetStream(store, after, send, self._encode_event)
        await stream.serve(sse_headers(self.mcp_session_id), request.receive)

    def _encode_event(self, message: types.JSONRPCMessage, event_id: str) -> bytes:
        """One event as the SDK's SSE responses put it on the wire."""
        return ensure_bytes(self._create_event_data(EventMessage(message, event_id)),
                            EventSourceResponse.DEFAULT_SEPARATOR)


def _is_get_stream(scope: Scope) -> bool:
    """A GET served as the session's GET stream (hooks 6 and 8: ``g`` ids)."""
    if scope["method"] != "GET":
        return False
    header = LAST_EVENT_ID_HEADER.encode()
    value = next((v for k, v in scope["headers"] if k == header), b"")
    return value.startswith(b"g")


def sse_headers(session_id: str | None) -> list[tuple[bytes, bytes]]:
    """Hook 8: the head of the SDK's SSE responses (its headers, then sse-starlette's)."""
    headers = [(b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
               (b"content-type", CONTENT_TYPE_SSE.encode())]
    if session_id:
        headers.append((MCP_SESSION_ID_HEADER.encode(), session_id.encode()))
    headers.append((b"x-accel-buffering", b"no"))
    return headers
