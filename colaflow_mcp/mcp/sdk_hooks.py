"""Every private coupling to the ``mcp`` SDK, in one place (pinned: ``mcp==2.3.*``).

The SDK gives no public way to do these; each is checked by tests/mcp/test_sdk_hooks.py,
which fails with a clear message if an upgrade renames, re-signs or stops calling one.

1. ``MCPServer._lowlevel_server`` — the low-level server behind ``MCPServer``: the only way
   to register ``resources/subscribe`` / ``resources/unsubscribe`` (``MCPServer`` does not
   serve them), to replace the ``subscriptions/listen`` handler (to gate it by tenant) and
   to add the middleware that exposes the caller's principal.
2. ``StreamableHTTPSessionManager._admit_session(requestor)`` — called synchronously (under
   the manager's creation lock) when a session is created, and builds its transport from
   ``self.event_store``: overridden so each session gets an event store of its own (a
   shared store cannot tell sessions apart: every session's GET stream has the same stream
   id), and to refuse a key over its session limit by raising, which reaches the endpoint
   before anything is sent.
3. ``StreamableHTTPSessionManager._discard_session(session_id, transport)`` — the one
   place every session end passes through (DELETE, idle timeout, crash, shutdown; possibly
   more than once per session): overridden to drop the session's subscriptions and end its
   GET stream.
4. ``StreamableHTTPSessionManager._server_instances`` — the session table: how a key's
   live sessions are counted and how the revocation pass ends the sessions of a revoked
   key. With ``._session_owners`` (each session's owner): renamed in ``_admit_session`` to
   the session id with the instance's routing tag (the SDK makes the id itself, a plain
   uuid; a load balancer routes a session by the tag, docs/scale-out.md).
5. ``StreamableHTTPServerTransport._event_store`` — the session's store, closed when the
   session ends (its GET stream is served from the store and ends with it).
6. The transport's GET handling: a GET with ``Last-Event-ID`` is served by
   ``EventStore.replay_events_after`` alone. :func:`serve_get_from_store` adds that header
   to every GET of a session, so the whole GET stream is served from the store
   (``event_store.SessionEventStore``), with no gap between replay and live updates.
7. sse-starlette's ``EventSourceResponse.DEFAULT_PING_INTERVAL`` — the SDK builds its
   legacy SSE responses without ``ping=``, so each gets this default, and with it a ping
   task per open stream (~5 KiB per idle session). :func:`disable_sse_ping_tasks` sets it
   to 0 (sse-starlette then starts no ping task); ``keepalive.SseKeepAlive`` pings the
   endpoint's streams from one task instead.
8. ``StreamableHTTPServerTransport._replay_events(last_event_id, request, send)`` — what
   the transport's GET handling calls, after validating the request, for a GET with
   ``Last-Event-ID``; with ``_create_event_data(event_message)``, how it frames an event
   for sse-starlette, and ``CONTENT_TYPE_SSE``. Each session's transport is made a
   :class:`LeanGetTransport` (its class swapped when admitted, no per-session cost) whose
   ``_replay_events`` serves a GET-stream resumption with ``get_stream.GetStream``
   instead of an sse-starlette response with its task group: the same head and the same
   bytes per event, no task while idle. Request-stream resumptions go to the SDK.
"""


from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    EventMessage,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from starlette.requests import Request
from starlette.types import Scope, Send

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME, SessionEventStore
from colaflow_mcp.mcp.get_stream import GetStream

# Who is opening a session: set by the endpoint around the request, read at admission
# (the SDK hands ``_admit_session`` only the credential's identity, not our principal).
_OPENING: ContextVar[Principal | None] = ContextVar("colaflow_mcp_opening", default=None)


def lowlevel_server(server: MCPServer) -> Server[Any]:
    """Hook 1: the low-level server behind ``server``."""
    lowlevel: Server[Any] = server._lowlevel_server
    return lowlevel


class SessionLimitReached(Exception):
    """A key asked for one more session than its limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"session limit {limit} reached")
        self.limit = limit


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's manager with hooks 2-5: an event store per session, a cap on each API
    key's live sessions, a callback when a session ends, and a way to end a session."""

    def __init__(self, *, make_event_store: Callable[[], SessionEventStore],
                 on_session_end: Callable[[str], None], max_per_key: int,
                 tagged: Callable[[str], str] = str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make_event_store = make_event_store
        self._tagged = tagged  # puts the instance's routing tag in front of a session id
        self._on_session_end = on_session_end
        self.max_per_key = max_per_key
        self._key_of: dict[str, str] = {}  # session id -> API key id
        self._sessions_of: dict[str, set[str]] = {}  # API key id -> its session ids

    @contextmanager
    def opening(self, principal: Principal) -> Iterator[None]:
        """Requests inside may open a session for ``principal`` (counted, capped)."""
        token = _OPENING.set(principal)
        try:
            yield
        finally:
            _OPENING.reset(token)

    def live_sessions(self, key_id: str) -> int:
        """Hook 4: sessions of the key not yet ended (a DELETE or revocation ends one at
        once)."""
        live = 0
        for session_id in self._sessions_of.get(key_id, ()):
            transport = self._server_instances.get(session_id)
            if transport is not None and not transport.is_terminated:
                live += 1
        return live

    def key_ids(self) -> set[str]:
        """The API keys holding sessions."""
        return set(self._sessions_of)

    def sessions_of(self, key_id: str) -> list[str]:
        """The session ids a key holds."""
        return list(self._sessions_of.get(key_id, ()))

    def _admit_session(self, requestor: AuthorizationContext | None
                       ) -> StreamableHTTPServerTransport | None:
        # Hook 2, called under the manager's creation lock with no await between the count
        # and the registration, so concurrent opens cannot overshoot the cap.
        principal = _OPENING.get()
        key_id = principal.api_key_id if principal is not None else None
        if key_id is not None and self.live_sessions(key_id) >= self.max_per_key:
            raise SessionLimitReached(self.max_per_key)
        # The transport takes ``self.event_store`` when it is built here.
        self.event_store = self._make_event_store()
        try:
            transport = super()._admit_session(requestor)
        finally:
            self.event_store = None
        if transport is not None:
            self._tag(transport)
            transport.__class__ = LeanGetTransport  # hook 8
        if transport is not None and key_id is not None:
            session_id = transport.mcp_session_id
            assert session_id is not None
            self._key_of[session_id] = key_id
            self._sessions_of.setdefault(key_id, set()).add(session_id)
        return transport

    def _tag(self, transport: StreamableHTTPServerTransport) -> None:
        """Hook 4: rename the new session to its tagged id, in the SDK's tables, before its
        task starts or its id is sent."""
        old = transport.mcp_session_id
        assert old is not None
        new = self._tagged(old)
        transport.mcp_session_id = new
        self._server_instances[new] = self._server_instances.pop(old)
        if old in self._session_owners:
            self._session_owners[new] = self._session_owners.pop(old)

    async def _discard_session(self, session_id: str,
                               transport: StreamableHTTPServerTransport) -> None:
        # Hook 3, reached on DELETE, idle timeout, crash and shutdown (maybe more than once).
        self._forget(session_id)
        self._on_session_end(session_id)
        store = session_event_store(transport)
        if store is not None:
            store.close()
        await super()._discard_session(session_id, transport)

    def _forget(self, session_id: str) -> None:
        key_id = self._key_of.pop(session_id, None)
        ids = self._sessions_of.get(key_id or "")
        if key_id is None or ids is None:
            return
        ids.discard(session_id)
        if not ids:
            del self._sessions_of[key_id]

    def end_get_streams(self) -> None:
        """Hooks 4 and 5: end every session's open GET stream (the sessions stay)."""
        for transport in list(self._server_instances.values()):
            store = session_event_store(transport)
            if store is not None:
                store.end_get_stream()

    def session_ids(self) -> list[str]:
        """Hook 4: the ids of the live sessions."""
        return list(self._server_instances)

    async def terminate(self, session_id: str) -> int:
        """Hook 4: end a session (1 if it was live); its end then passes through
        ``_discard_session``."""
        transport = self._server_instances.get(session_id)
        if transport is not None and not transport.is_terminated:
            await transport.terminate()
            return 1
        return 0


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
    """Hook 8: the SDK's transport, with GET streams served by ``get_stream.GetStream``."""

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


def sse_headers(session_id: str | None) -> list[tuple[bytes, bytes]]:
    """Hook 8: the head of the SDK's SSE responses (its headers, then sse-starlette's)."""
    headers = [(b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
               (b"content-type", CONTENT_TYPE_SSE.encode())]
    if session_id:
        headers.append((MCP_SESSION_ID_HEADER.encode(), session_id.encode()))
    headers.append((b"x-accel-buffering", b"no"))
    return headers
