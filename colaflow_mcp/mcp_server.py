"""The MCP endpoint: Streamable HTTP at ``/mcp``, both protocol eras, API-key authenticated.

Request path: Host/Origin check → API key → ``StreamableHTTPSessionManager``. Legacy
clients (``initialize`` + ``Mcp-Session-Id``) get a stateful session with a standalone GET
stream; modern (2026-07-28) requests are single exchanges. Tools and resources live in
``mcp_tools``, subscriptions in ``mcp_subscriptions``.

Pinned to ``mcp==2.3.*``. Private SDK hooks used (re-check on upgrade):
- ``MCPServer._lowlevel_server``: the only way to register ``resources/subscribe`` and a
  replacement ``subscriptions/listen`` handler.
- ``StreamableHTTPSessionManager._admit_session`` (give each session its own event store),
  ``._discard_session`` (the one place every session end passes through) and
  ``._server_instances`` (to end the session of a revoked key).
- ``StreamableHTTPServerTransport._event_store`` (to end the session's GET stream, which
  the store serves, when the session ends), and the transport's GET handling: a request
  with ``Last-Event-ID`` is served by ``EventStore.replay_events_after`` alone.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import (
    GET_STREAM_KEY,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from colaflow_mcp.auth import KEY_PREFIX, bearer
from colaflow_mcp.mcp_context import SCOPE_KEY, PrincipalMiddleware
from colaflow_mcp.mcp_subscriptions import Subscriptions
from colaflow_mcp.mcp_tools import build_server

if TYPE_CHECKING:
    from colaflow_mcp.services import Services

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
# Sent as Last-Event-ID on a GET that brings none: resume after the last GET event this
# session wrote to any earlier GET stream (all of them, on its first). See SessionEventStore.
GET_STREAM_RESUME = "g-resume"


# -- transport security -------------------------------------------------------------------

def _split_host(host: str) -> tuple[str, str | None]:
    """``("name", "port")`` of a Host header value (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1:]
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, None)


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Loopback, or an allowed ``name`` (any port), ``name:port`` or ``name:*``; ``*`` = any."""
    if "*" in allowed:
        return True
    if not host:
        return False
    name, _ = _split_host(host)
    if name in LOOPBACK_HOSTS:
        return True
    for entry in allowed:
        entry = entry.strip().lower()
        if entry in (host.strip().lower(), name) or entry == f"{name}:*":
            return True
    return False


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser), a loopback origin, or a listed one; ``*`` = any."""
    if not origin or "*" in allowed:
        return True
    origin = origin.strip().lower().rstrip("/")
    try:
        name, _ = _split_host(urlsplit(origin).netloc)
    except ValueError:
        return False
    if name in LOOPBACK_HOSTS:
        return True
    return origin in {o.strip().lower().rstrip("/") for o in allowed}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status,
                        headers=headers)


# -- resumability ---------------------------------------------------------------------------

class SessionEventStore(EventStore):
    """One session's recent SSE events; the session's GET stream is served from here.

    One store per session (a shared store could not tell sessions apart: every session's
    GET stream has the same stream id). Bounded by count: the GET stream keeps
    ``capacity`` events (small notifications), request streams only the last few (they
    carry whole tool results and are rarely resumed). Event ids are ``g<seq>`` for the GET
    stream and ``r<seq>`` for request streams, so a GET-stream id that already fell off
    still resumes from what is left.

    Every GET arrives here as a replay (the endpoint adds a Last-Event-ID where the client
    sent none), and the replay does not return: it sends what was stored after that id,
    then tails the store until the stream ends, a newer GET stream of the session takes
    over, or the session closes. The SDK's own path registers the live stream only after
    the replay has returned, and drops (only stores) what the session sends in between; a
    decision announced in that gap would reach the client on its next reconnect at best.
    Served from the store, the stream has no gap: whatever is stored is sent, in order.
    """

    REQUEST_EVENTS = 32

    def __init__(self, capacity: int) -> None:
        self._get: deque[tuple[int, types.JSONRPCMessage | None]] = deque(
            maxlen=max(1, capacity))
        self._requests: deque[tuple[int, StreamId, types.JSONRPCMessage | None]] = deque(
            maxlen=min(max(1, capacity), self.REQUEST_EVENTS))
        self._seq = 0
        self._written = 0  # the last GET event handed to a GET stream
        self._stream = 0  # generation of the GET stream being served
        self._closed = False
        self._wake = anyio.Event()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    def close(self) -> None:
        """The session ended: its GET stream ends too."""
        self._closed = True
        self._notify()

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None
                          ) -> EventId:
        self._seq += 1
        if stream_id == GET_STREAM_KEY:
            self._get.append((self._seq, message))
            if message is not None:
                self._notify()
            return f"g{self._seq}"
        self._requests.append((self._seq, stream_id, message))
        return f"r{self._seq}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback
                                  ) -> StreamId | None:
        if last_event_id == GET_STREAM_RESUME:
            await self._serve_get_stream(self._written, send_callback)
            return None
        kind, digits = last_event_id[:1], last_event_id[1:]
        if kind not in ("g", "r") or not digits.isdigit():
            return None
        after = int(digits)
        if kind == "g":
            await self._serve_get_stream(after, send_callback)
            return None
        stream_id = next((sid for seq, sid, _ in self._requests if seq == after), None)
        if stream_id is None:
            return None
        for seq, sid, message in list(self._requests):
            if seq > after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, f"r{seq}"))
        return stream_id

    def _get_events_after(self, after: int) -> list[tuple[int, types.JSONRPCMessage | None]]:
        """GET events with seq > ``after``, oldest first; walks only those (newest end)."""
        newer: list[tuple[int, types.JSONRPCMessage | None]] = []
        for event in reversed(self._get):
            if event[0] <= after:
                break
            newer.append(event)
        newer.reverse()
        return newer

    async def _serve_get_stream(self, after: int, send: EventCallback) -> None:
        """Send GET events after ``after``, then each one as it is stored, until replaced."""
        self._stream += 1
        me = self._stream
        self._notify()  # an older GET stream of this session ends
        while not self._closed and self._stream == me:
            wake = self._wake
            for seq, message in self._get_events_after(after):
                if self._closed or self._stream != me:
                    return
                if message is not None:
                    await send(EventMessage(message, f"g{seq}"))
                    self._written = max(self._written, seq)
                after = seq
            await wake.wait()


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's manager, plus a per-session event store and a hook when a session ends."""

    def __init__(self, endpoint: McpEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._endpoint = endpoint

    def _admit_session(self, requestor: AuthorizationContext | None
                       ) -> StreamableHTTPServerTransport | None:
        # Private hook (mcp 2.3): the transport takes ``self.event_store`` when it is built
        # here, synchronously, so each session gets a store of its own.
        self.event_store = SessionEventStore(self._endpoint.event_history)
        try:
            return super()._admit_session(requestor)
        finally:
            self.event_store = None

    async def _discard_session(self, session_id: str,
                               transport: StreamableHTTPServerTransport) -> None:
        # Private hook (mcp 2.3): reached on DELETE, idle timeout, crash and shutdown,
        # possibly more than once per session.
        self._endpoint.session_closed(session_id)
        store = transport._event_store  # private (mcp 2.3)
        if isinstance(store, SessionEventStore):
            store.close()
        await super()._discard_session(session_id, transport)


# -- the endpoint ---------------------------------------------------------------------------

class McpEndpoint:
    """``app`` serves MCP at whatever path it is mounted; enter ``lifespan()`` in the host."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.allowed_hosts = tuple(settings.allowed_hosts)
        self.allowed_origins = tuple(settings.allowed_origins)
        self.event_history = settings.mcp_event_history_per_session
        self.revocation_interval = settings.revocation_check_interval_seconds
        self.subscriptions = Subscriptions(services.notifier,
                                           settings.mcp_max_subscriptions_per_session,
                                           self._terminate_session)
        self.server = build_server(services.changes)
        lowlevel = self.server._lowlevel_server  # private (mcp 2.3), see the module docstring
        lowlevel.middleware.append(PrincipalMiddleware())
        lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams,
                                     self.subscriptions.subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams,
                                     self.subscriptions.unsubscribe)
        lowlevel.add_request_handler("subscriptions/listen",
                                     types.SubscriptionsListenRequestParams,
                                     self.subscriptions.listen)
        self.manager = _SessionManager(
            self, app=lowlevel, json_response=False, stateless=False,
            # Host/Origin are checked here first (with "*" support); the SDK still checks
            # Content-Type.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=settings.max_body_bytes,
        )
        app: ASGIApp = self._serve
        if self.allowed_origins:
            app = CORSMiddleware(
                app, allow_origins=list(self.allowed_origins), allow_methods=["GET", "POST",
                                                                              "DELETE"],
                allow_headers=["*"], expose_headers=["Mcp-Session-Id"],
            )
        self.app: ASGIApp = app

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Run the session manager (a mounted app's own lifespan never runs)."""
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self.subscriptions.start(tg)
            tg.start_soon(self._revocation_loop)
            try:
                async with self.manager.run():
                    yield
            finally:
                self.subscriptions.stop()
                tg.cancel_scope.cancel()

    def session_closed(self, session_id: str) -> None:
        self.subscriptions.session_closed(session_id)

    async def _terminate_session(self, session_id: str) -> None:
        # Private (mcp 2.3): the manager's session table. Terminating the transport ends
        # the session's loop, which then passes through ``_discard_session``.
        transport = self.manager._server_instances.get(session_id)
        if transport is not None and not transport.is_terminated:
            await transport.terminate()

    async def _revocation_loop(self) -> None:
        """Close subscriptions of revoked keys; never dies silently."""
        while True:
            await anyio.sleep(self.revocation_interval)
            try:
                await self.subscriptions.drop_revoked(self.services.keys.still_valid)
            except Exception:
                logger.exception("MCP revocation check failed; retrying")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        if scope.get("path", "/") not in ("", "/"):
            await _error(404, "not_found", "MCP is served at the endpoint itself")(
                scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            await _error(421, "misdirected_request",
                         f"Host {headers.get('host', '')[:100]!r} is not allowed; add it to "
                         "COLAFLOW_ALLOWED_HOSTS")(scope, receive, send)
            return
        if not origin_allowed(headers.get("origin"), self.allowed_origins):
            await _error(403, "forbidden_origin",
                         f"Origin {headers.get('origin', '')[:100]!r} is not allowed; add it "
                         "to COLAFLOW_ALLOWED_ORIGINS")(scope, receive, send)
            return
        credential = bearer(headers.get("authorization")) or headers.get("x-api-key")
        principal = None
        if credential and credential.strip().startswith(KEY_PREFIX):
            principal = await self.services.auth.authenticate(credential)
        if principal is None or principal.kind != "agent":
            message = ("MCP needs an API key: send 'Authorization: Bearer cola_…' or "
                       "'X-API-Key: cola_…'" if not credential else
                       "invalid, revoked or expired API key")
            await _error(401, "unauthorized", message,
                         {"WWW-Authenticate": 'Bearer realm="colaflow"'})(scope, receive, send)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = principal
        # The SDK binds each session to the credential that opened it (by client_id):
        # another key presenting the session id gets 404, as if it did not exist.
        scope["user"] = AuthenticatedUser(AccessToken(
            token=principal.api_key_id or "", client_id=principal.api_key_id or "", scopes=[],
            subject=principal.tenant_id,
        ))
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        if scope["method"] == "GET" and session_id:
            await self._serve_get_stream(headers, scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    async def _serve_get_stream(self, headers: Headers, scope: Scope, receive: Receive,
                                send: Send) -> None:
        # Every GET stream is served as a replay from the session's event store (see
        # SessionEventStore): one without Last-Event-ID resumes after what the session's
        # earlier GET streams were sent, so what was sent while none was open is not lost.
        if not headers.get(LAST_EVENT_ID_HEADER):
            raw = [(k, v) for k, v in scope["headers"] if k != LAST_EVENT_ID_HEADER.encode()]
            raw.append((LAST_EVENT_ID_HEADER.encode(), GET_STREAM_RESUME.encode()))
            scope["headers"] = raw
        await self.manager.handle_request(scope, receive, send)

    def status(self) -> dict[str, object]:
        """Counters for ``/health``."""
        return {
            "legacySessionsSubscribed": len(self.subscriptions.sessions),
            "listenStreams": len(self.subscriptions.listen_streams),
        }


__all__ = ["McpEndpoint", "SessionEventStore", "host_allowed", "origin_allowed"]
