"""The MCP endpoint: Streamable HTTP at ``/mcp``, both protocol eras, API-key authenticated.

Request path: Host/Origin check → API key → ``StreamableHTTPSessionManager``. Legacy
clients (``initialize`` + ``Mcp-Session-Id``) get a stateful session with a standalone GET
stream; modern (2026-07-28) requests are single exchanges. Tools and resources live in
``mcp_tools``, subscriptions in ``mcp_subscriptions``.

Pinned to ``mcp==2.3.*``. Private SDK hooks used (re-check on upgrade):
- ``MCPServer._lowlevel_server``: the only way to register ``resources/subscribe`` and a
  replacement ``subscriptions/listen`` handler.
- ``StreamableHTTPSessionManager._admit_session`` (give each session its own event store;
  refuse a key over its session limit by raising, which reaches ``McpEndpoint._serve``
  before anything is sent), ``._discard_session`` (the one place every session end passes
  through) and ``._server_instances`` (to count a key's live sessions and to end the
  sessions of a revoked key).
- ``StreamableHTTPSessionManager._server_instances`` and ``._session_owners`` renamed to
  the tagged session id in ``_admit_session`` (the SDK makes the id itself, a plain uuid).
- ``StreamableHTTPServerTransport._event_store`` (to end the session's GET stream, which
  the store serves, when the session ends), and the transport's GET handling: a request
  with ``Last-Event-ID`` is served by ``EventStore.replay_events_after`` alone.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
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
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colaflow_mcp.auth import KEY_PREFIX, Principal, bearer
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
# Who is opening a session: set by the endpoint around the request, read at admission
# (the SDK hands ``_admit_session`` only the credential's identity, not our principal).
_OPENING: ContextVar[Principal | None] = ContextVar("colaflow_mcp_opening", default=None)
MIN_SSE_RETRY_SECONDS = 2.0


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


def _jsonrpc_error(status: int, message: str, data: dict[str, object]) -> Response:
    """A JSON-RPC error (no request id) at an HTTP status, as the SDK answers its own refusals.

    Used where an MCP client meets the refusal: the Python SDK raises the JSON-RPC error's
    message as ``MCPError`` (any other body becomes "Server returned an error response"),
    and the TypeScript SDK puts the status and the whole body in its error.
    """
    body = types.JSONRPCError(jsonrpc="2.0", id=None, error=types.ErrorData(
        code=types.INVALID_REQUEST, message=message, data=data))
    return Response(body.model_dump_json(by_alias=True, exclude_unset=True),
                    status_code=status, media_type="application/json")


class SessionLimitReached(Exception):
    """A key asked for one more session than ``mcp_max_sessions_per_key`` allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"session limit {limit} reached")
        self.limit = limit


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
    """The SDK's manager, plus a per-session event store, a cap on each API key's live
    sessions, and a hook when a session ends."""

    def __init__(self, endpoint: McpEndpoint, max_per_key: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._endpoint = endpoint
        self.max_per_key = max_per_key
        self._key_of: dict[str, str] = {}  # session id -> API key id
        self._sessions_of: dict[str, set[str]] = {}  # API key id -> its session ids
        self._principals: dict[str, Principal] = {}  # API key id -> who opened them

    def live_sessions(self, key_id: str) -> int:
        """Sessions of the key not yet ended (a DELETE or revocation ends one at once)."""
        live = 0
        for session_id in self._sessions_of.get(key_id, ()):
            transport = self._server_instances.get(session_id)
            if transport is not None and not transport.is_terminated:
                live += 1
        return live

    def keys_with_sessions(self) -> list[tuple[Principal, list[str]]]:
        """Each API key holding sessions, with their ids (for the revocation check)."""
        return [(self._principals[key_id], list(ids))
                for key_id, ids in self._sessions_of.items()]

    def _admit_session(self, requestor: AuthorizationContext | None
                       ) -> StreamableHTTPServerTransport | None:
        # Private hook (mcp 2.3), called under the manager's creation lock with no await
        # between the count and the registration, so concurrent opens cannot overshoot.
        principal = _OPENING.get()
        key_id = principal.api_key_id if principal is not None else None
        if key_id is not None and self.live_sessions(key_id) >= self.max_per_key:
            raise SessionLimitReached(self.max_per_key)
        # The transport takes ``self.event_store`` when it is built here, synchronously,
        # so each session gets a store of its own.
        self.event_store = SessionEventStore(self._endpoint.event_history)
        try:
            transport = super()._admit_session(requestor)
        finally:
            self.event_store = None
        if transport is not None:
            self._tag_session(transport)
        if transport is not None and principal is not None and key_id is not None:
            session_id = transport.mcp_session_id
            assert session_id is not None
            self._key_of[session_id] = key_id
            self._sessions_of.setdefault(key_id, set()).add(session_id)
            self._principals.setdefault(key_id, principal)
        return transport

    def _tag_session(self, transport: StreamableHTTPServerTransport) -> None:
        """Rename the new session ``<instance tag>.<SDK's id>`` (docs/scale-out.md: a load
        balancer routes the session's requests by the tag). Private (mcp 2.3): the SDK's
        session tables, renamed before the session's task starts or its id is sent."""
        old = transport.mcp_session_id
        assert old is not None
        new = self._endpoint.services.settings.tagged(old)
        transport.mcp_session_id = new
        self._server_instances[new] = self._server_instances.pop(old)
        if old in self._session_owners:
            self._session_owners[new] = self._session_owners.pop(old)

    def _forget(self, session_id: str) -> None:
        key_id = self._key_of.pop(session_id, None)
        ids = self._sessions_of.get(key_id or "")
        if key_id is None or ids is None:
            return
        ids.discard(session_id)
        if not ids:
            del self._sessions_of[key_id]
            self._principals.pop(key_id, None)

    async def _discard_session(self, session_id: str,
                               transport: StreamableHTTPServerTransport) -> None:
        # Private hook (mcp 2.3): reached on DELETE, idle timeout, crash and shutdown,
        # possibly more than once per session.
        self._forget(session_id)
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
        if settings.mcp_sse_retry_seconds < MIN_SSE_RETRY_SECONDS:
            # Below this the Python SDK's one reconnection attempt comes too soon to ride
            # out an ordinary network blip.
            raise ValueError(f"COLAFLOW_MCP_SSE_RETRY_SECONDS must be at least "
                             f"{MIN_SSE_RETRY_SECONDS:g}, not {settings.mcp_sse_retry_seconds:g}")
        retry_ms = round(settings.mcp_sse_retry_seconds * 1000)
        # Sent first on every GET stream (see ``_serve_get_stream``).
        self.retry_field = f"retry: {retry_ms}\r\n\r\n".encode()  # sse-starlette's line ends
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
            self, settings.mcp_max_sessions_per_key, app=lowlevel, json_response=False,
            stateless=False,
            # Host/Origin are checked here first (with "*" support); the SDK still checks
            # Content-Type.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=settings.max_body_bytes,
            max_sessions=settings.mcp_max_sessions,
            session_idle_timeout=settings.mcp_session_idle_timeout_seconds,
            # The SDK puts this in the priming event of each request stream; the GET
            # stream, which the SDK does not prime, gets it from ``_serve_get_stream``.
            retry_interval=retry_ms,
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

    async def _terminate_session(self, session_id: str) -> int:
        # Private (mcp 2.3): the manager's session table. Terminating the transport ends
        # the session's loop, which then passes through ``_discard_session``.
        transport = self.manager._server_instances.get(session_id)
        if transport is not None and not transport.is_terminated:
            await transport.terminate()
            return 1
        return 0

    async def _revocation_loop(self) -> None:
        """Close subscriptions and sessions of revoked keys; never dies silently."""
        while True:
            await anyio.sleep(self.revocation_interval)
            try:
                await self.revocation_pass()
            except Exception:
                logger.exception("MCP revocation check failed; retrying")

    async def revocation_pass(self) -> None:
        """End the listen streams and the sessions (subscribed or not, which frees their
        slots) of every key that was revoked or expired; one lookup per key."""
        verdicts: dict[str | None, bool] = {}

        async def still_valid(principal: Principal) -> bool:
            key_id = principal.api_key_id
            if key_id not in verdicts:
                verdicts[key_id] = await self.services.keys.still_valid(principal)
            return verdicts[key_id]

        await self.subscriptions.drop_revoked(still_valid)
        ended = 0
        for principal, session_ids in self.manager.keys_with_sessions():
            if await still_valid(principal):
                continue
            for session_id in session_ids:
                ended += await self._terminate_session(session_id)
        if ended:
            logger.info("ended %d MCP session(s) of revoked or expired keys", ended)

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
        if session_id:
            await self.manager.handle_request(scope, receive, send)
            return
        opening = _OPENING.set(principal)
        try:
            await self.manager.handle_request(scope, receive, send)
        except SessionLimitReached as exc:
            await self._session_limit_response(principal, exc.limit)(scope, receive, send)
        finally:
            _OPENING.reset(opening)

    def _session_limit_response(self, principal: Principal, limit: int) -> Response:
        logger.warning("refused a new MCP session: API key %s already has %d open",
                       principal.api_key_id, limit)
        # 429, not the 503 of the SDK's global cap: this key is over its own quota, the
        # server is not overloaded and other keys are served. The body is a JSON-RPC error
        # because that is what both SDKs show the caller (see ``_jsonrpc_error``).
        return _jsonrpc_error(
            429,
            f"Too many open MCP sessions for this API key (limit {limit}). End sessions you "
            "no longer use (DELETE /mcp with their Mcp-Session-Id; SDK clients do this when "
            "closed) or wait for idle ones to expire; the server's limit is "
            "COLAFLOW_MCP_MAX_SESSIONS_PER_KEY.",
            {"maxSessionsPerKey": limit},
        )

    async def _serve_get_stream(self, headers: Headers, scope: Scope, receive: Receive,
                                send: Send) -> None:
        # Every GET stream is served as a replay from the session's event store (see
        # SessionEventStore): one without Last-Event-ID resumes after what the session's
        # earlier GET streams were sent, so what was sent while none was open is not lost.
        if not headers.get(LAST_EVENT_ID_HEADER):
            raw = [(k, v) for k, v in scope["headers"] if k != LAST_EVENT_ID_HEADER.encode()]
            raw.append((LAST_EVENT_ID_HEADER.encode(), GET_STREAM_RESUME.encode()))
            scope["headers"] = raw
        await self.manager.handle_request(scope, receive, self._with_retry_hint(send))

    def _with_retry_hint(self, send: Send) -> Send:
        """``send`` that opens an SSE response with a ``retry:`` field.

        Without it a client falls back to its own default (the Python SDK: 1 s, one attempt,
        then silence for the rest of the session). Sent at once, not with the first event,
        because the stream may drop before any event was due.
        """
        async def send_with_hint(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.start" and message["status"] == 200 and any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", ())):
                await send({"type": "http.response.body", "body": self.retry_field,
                            "more_body": True})

        return send_with_hint

    def status(self) -> dict[str, object]:
        """Counters for ``/health``."""
        return {
            "legacySessionsSubscribed": len(self.subscriptions.sessions),
            "listenStreams": len(self.subscriptions.listen_streams),
        }


__all__ = ["McpEndpoint", "SessionEventStore", "host_allowed", "origin_allowed"]
