"""The MCP endpoint: Streamable HTTP at ``/mcp``, both protocol eras, API-key authenticated.

Request path: Host/Origin check → API key → the SDK's session manager. Legacy clients
(``initialize`` + ``Mcp-Session-Id``) get a stateful session with a standalone GET stream
(served from the session's event store); modern (2026-07-28) requests are single
exchanges, and a held ``subscriptions/listen`` stream is served here once the SDK has acked
it (``listen_stream``, ``sdk_hooks`` hook 11). Tools are in ``tools`` (generated from the
domain's operation table), resources in ``resources``, subscriptions in
``subscriptions``; every private coupling to the SDK is in ``sdk_hooks``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colaflow_mcp import logs
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.auth import KEY_PREFIX, Authenticator, Principal, credential_from
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.http import json_error
from colaflow_mcp.mcp import sdk_hooks
from colaflow_mcp.mcp.context import SCOPE_KEY, PrincipalMiddleware
from colaflow_mcp.mcp.event_store import SessionEventStore
from colaflow_mcp.mcp.keepalive import SseKeepAlive
from colaflow_mcp.mcp.listen_stream import DirectListen, detach_of
from colaflow_mcp.mcp.resources import register_resources
from colaflow_mcp.mcp.subscriptions import DIRECT_OPEN, DirectOpen, Subscriptions
from colaflow_mcp.mcp.tools import build_server
from colaflow_mcp.store.engine import unavailable

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
MIN_SSE_RETRY_SECONDS = 2.0
MAX_CACHED_USERS = 10_000
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


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


def _replaying(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives back the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


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


# -- the endpoint ---------------------------------------------------------------------------

class McpEndpoint:
    """``app`` serves MCP at whatever path it is mounted; the runtime enters ``serving()``."""

    def __init__(self, settings: Settings, auth: Authenticator, changes: ChangeService,
                 queries: Queries, notifier: Notifier) -> None:
        self.settings = settings
        self.auth = auth
        self.allowed_hosts = tuple(settings.allowed_hosts)
        self.allowed_origins = tuple(settings.allowed_origins)
        self._users: dict[tuple[str, str], AuthenticatedUser] = {}
        if settings.mcp_sse_retry_seconds < MIN_SSE_RETRY_SECONDS:
            # Below this the Python SDK's one reconnection attempt comes too soon to ride
            # out an ordinary network blip.
            raise ValueError(f"COLAFLOW_MCP_SSE_RETRY_SECONDS must be at least "
                             f"{MIN_SSE_RETRY_SECONDS:g}, not {settings.mcp_sse_retry_seconds:g}")
        if settings.mcp_sse_ping_seconds <= 0:
            raise ValueError("COLAFLOW_MCP_SSE_PING_SECONDS must be positive, not "
                             f"{settings.mcp_sse_ping_seconds:g}")
        retry_ms = round(settings.mcp_sse_retry_seconds * 1000)
        # Sent first on every GET stream (see ``_with_retry_hint``).
        self.retry_field = f"retry: {retry_ms}\r\n\r\n".encode()  # sse-starlette's line ends
        self.subscriptions = Subscriptions(notifier, settings.mcp_max_subscriptions_per_session,
                                           self._terminate_session,
                                           lambda session_id: self.manager.event_store_of(
                                               session_id))
        # One task pings every session's SSE streams (not sse-starlette's task per stream).
        sdk_hooks.disable_sse_ping_tasks()
        # A request's SDK runner freed when it returns, not by the cyclic collector.
        sdk_hooks.runners_freed_by_refcount()
        self.keepalive = SseKeepAlive(settings.mcp_sse_ping_seconds)
        self.server = build_server(changes, queries)
        register_resources(self.server, queries)
        lowlevel = sdk_hooks.lowlevel_server(self.server)
        lowlevel.middleware.append(PrincipalMiddleware())
        lowlevel.middleware.append(sdk_hooks.SessionActivity())  # hook 9: not parked mid-call
        lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams,
                                     self.subscriptions.subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams,
                                     self.subscriptions.unsubscribe)
        lowlevel.add_request_handler("subscriptions/listen",
                                     types.SubscriptionsListenRequestParams,
                                     self.subscriptions.listen)
        self.manager = sdk_hooks.SessionManager(
            make_event_store=lambda: SessionEventStore(
                settings.mcp_event_history_per_session, settings.mcp_request_event_history),
            # Late-bound, so the session end goes through ``session_closed`` as it is now.
            on_session_end=lambda session_id: self.session_closed(session_id),
            max_per_key=settings.mcp_max_sessions_per_key, tagged=settings.tagged,
            app=lowlevel, json_response=False, stateless=False,
            # Host/Origin are checked here first (with "*" support); the SDK still checks
            # Content-Type.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=settings.max_body_bytes,
            max_sessions=settings.mcp_max_sessions,
            session_idle_timeout=settings.mcp_session_idle_timeout_seconds,
            # The SDK puts this in the priming event of each request stream; the GET
            # stream, which the SDK does not prime, gets it from ``_with_retry_hint``.
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

    @asynccontextmanager
    async def serving(self, spawn: Spawn) -> AsyncIterator[None]:
        """Run the session manager (a mounted app's own lifespan never runs); session
        pumps are started with ``spawn`` (the supervisor's task group)."""
        self.subscriptions.start(spawn)
        spawn(self.keepalive.run)
        try:
            async with self.manager.run():
                yield
        finally:
            self.subscriptions.stop()

    def session_closed(self, session_id: str) -> None:
        """A session ended (DELETE, idle timeout, crash, revocation, shutdown)."""
        self.subscriptions.session_closed(session_id)

    def end_get_streams(self) -> None:
        """The server is shutting down: end the legacy sessions' GET streams now, so the
        server does not wait for them (their clients reconnect, elsewhere)."""
        self.manager.end_get_streams()

    async def _terminate_session(self, session_id: str) -> int:
        return await self.manager.terminate(session_id)

    def live_key_ids(self) -> set[str]:
        """The API keys of open sessions and listen streams (for the revocation pass)."""
        return self.subscriptions.live_key_ids() | self.manager.key_ids()

    async def drop_revoked(self, revoked: set[str], now_unix: float) -> int:
        """End the listen streams and the sessions (subscribed or not, which frees their
        slots) of revoked keys; agents hold no tokens that expire."""
        dropped = await self.subscriptions.drop_revoked(revoked)
        ended = 0
        for key_id in revoked & self.manager.key_ids():
            for session_id in self.manager.sessions_of(key_id):
                ended += await self._terminate_session(session_id)
        if ended:
            logger.info("ended %d MCP session(s) of revoked or expired keys", ended)
        return dropped + ended

    async def _authenticated(self, headers: Headers, scope: Scope, receive: Receive,
                             send: Send) -> Principal | None:
        """The agent behind the request's key, or None once the refusal is sent: 401 for
        a missing or bad key, 503 when the database cannot check it (clients retry a 503;
        they give up on a 401, and the key is not at fault)."""
        credential = credential_from(headers)
        principal = None
        if credential and credential.strip().startswith(KEY_PREFIX):
            try:
                principal = await self.auth.authenticate(credential)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                await json_error(503, "unavailable", "the database does not answer; try "
                                 "again shortly", {"Retry-After": "1"})(scope, receive, send)
                return None
        if principal is None or principal.kind != "agent":
            if not credential:
                message = ("MCP needs an API key: send 'Authorization: Bearer cola_…' or "
                           "'X-API-Key: cola_…'")
            elif not credential.strip().startswith(KEY_PREFIX):  # a reviewer token, say
                message = ("MCP needs an agent's API key (cola_…, from colaflow-mcp keys "
                           "create), not a reviewer token: those are for the REST API, "
                           "the hub and the changes commands")
            else:
                message = "invalid, revoked or expired API key"
            await json_error(401, "unauthorized", message,
                             {"WWW-Authenticate": 'Bearer realm="colaflow"'})(
                scope, receive, send)
            return None
        return principal

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        if scope.get("path", "/") not in ("", "/"):
            await json_error(404, "not_found", "MCP is served at the endpoint itself")(
                scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check_origin(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        principal = await self._authenticated(headers, scope, receive, send)
        if principal is None:
            return
        logs.bind(tenant=principal.tenant_slug)
        # A session's GET stream, held for the session's life, is served here directly
        # (sdk_hooks hook 10): it keeps no frame, request or scope copy of the SDK's path
        # (~5 KiB per idle session, issue 14). Anything else, refusals included, goes on.
        if scope["method"] == "GET":
            direct = self.manager.direct_get_stream(scope, headers, self._user_of(principal))
            if direct is not None:
                await self.manager.serve_get_stream(*direct, receive, send,
                                                    self.retry_field, self.keepalive)
                return
        # A modern listen stream, held for as long as the client listens, is served here
        # once the SDK's pipeline has acked it (hook 11): no SDK task, runner or memory
        # stream is held while it is idle (issue 14). Anything else goes on, its body
        # replayed.
        if (scope["method"] == "POST" and sdk_hooks.may_be_listen(headers)
                and not headers.get(MCP_SESSION_ID_HEADER)
                and sdk_hooks.manager_running(self.manager)):
            replay = await self._serve_listen(scope, headers, principal, receive, send)
            if replay is None:
                return
            receive = replay
        scope = dict(scope)
        scope[SCOPE_KEY] = principal
        # The SDK binds each session to the credential that opened it (by client_id):
        # another key presenting the session id gets 404, as if it did not exist.
        scope["user"] = self._user_of(principal)
        if headers.get(MCP_SESSION_ID_HEADER):
            send, stream = self.keepalive.track(send)  # pinged while it is an open SSE stream
            if scope["method"] == "GET":
                # Every GET stream is served as a replay from the session's event store.
                sdk_hooks.serve_get_from_store(scope)
                send = self._with_retry_hint(send)
            try:
                await self.manager.handle_request(scope, receive, send)
            finally:
                self.keepalive.untrack(stream)
            return
        with self.manager.opening(principal):  # may open a session: counted per key
            try:
                await self.manager.handle_request(scope, receive, send)
            except sdk_hooks.SessionLimitReached as exc:
                await self._session_limit_response(principal, exc.limit)(scope, receive, send)

    async def _serve_listen(self, scope: Scope, headers: Headers, principal: Principal,
                            receive: Receive, send: Send) -> Receive | None:
        """Serve a modern ``subscriptions/listen`` request that passes every check of the
        SDK's modern entry (hook 11) with ``listen_stream.DirectListen``, and return None;
        else the ``receive`` that replays what was read, for the SDK to answer it."""
        body, read = await sdk_hooks.read_body(scope, receive, self.manager.max_request_body_size)
        listen = None
        if body is not None:
            listen = sdk_hooks.listen_request(scope, headers, body)
        if listen is None:
            return _replaying(read, receive)
        sdk_scope = dict(scope)
        sdk_scope[SCOPE_KEY] = principal  # no "user": only the SDK's legacy sessions read it
        opened = DirectOpen()
        token = DIRECT_OPEN.set(opened)
        try:
            frames, final = await sdk_hooks.open_listen(self.manager, sdk_scope,
                                                        _replaying(read, receive), listen)
        except BaseException as exc:
            if opened.stream is not None:  # failed after the hand-over: undo it
                self.subscriptions.listen_closed(opened.stream)
            if not isinstance(exc, Exception):
                raise
            # A refusal (or a failure) of the SDK's pipeline: the SDK answers it, as its own.
            return _replaying(read, receive)
        finally:
            DIRECT_OPEN.reset(token)
        stream = opened.stream
        if stream is None:  # a middleware answered without the handler (none of ours does)
            return _replaying(read, receive)
        listener = DirectListen(stream, send, listen.id, final, self)
        detach = detach_of(scope)
        del sdk_scope, opened, body, read, headers, listen, final, stream
        try:
            await listener.serve(sdk_hooks.SSE_HEADERS, frames, receive, self.keepalive,
                                 detach)
        finally:
            if listener.held is None:
                listener.ended()  # (if serve has not: it tells the endpoint once)
        return None

    def listen_ended(self, listener: DirectListen) -> None:
        """A directly served listen stream is over: not pinged, its subscriptions gone."""
        self.keepalive.untrack(listener)
        self.subscriptions.listen_closed(listener.stream)

    def end_listen_streams(self) -> int:
        """The server is shutting down: cut the directly served listen streams now, with no
        final result, so the server does not wait for them and their clients listen again
        (elsewhere); a final result would tell a client the subscription ended for good."""
        cut = 0
        for stream in list(self.keepalive.streams):
            if isinstance(stream, DirectListen) and stream.active:
                stream.cut()
                cut += 1
        return cut

    def _user_of(self, principal: Principal) -> AuthenticatedUser:
        """The SDK's view of the caller; one (immutable) object per API key and tenant,
        since every open stream holds it in its scope (~0.7 KiB each if made per request).
        """
        key = (principal.api_key_id or "", principal.tenant_id)
        user = self._users.get(key)
        if user is None:
            if len(self._users) >= MAX_CACHED_USERS:
                self._users.clear()  # keys come and go; a bound, not an eviction policy
            user = self._users[key] = AuthenticatedUser(AccessToken(
                token=key[0], client_id=key[0], scopes=[], subject=principal.tenant_id))
        return user

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

    def _check_origin(self, headers: Headers) -> ASGIApp | None:
        """DNS-rebinding protection: the answer for a disallowed Host or Origin."""
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            return json_error(421, "misdirected_request",
                              f"Host {headers.get('host', '')[:100]!r} is not allowed; add it "
                              "to COLAFLOW_ALLOWED_HOSTS")
        if not origin_allowed(headers.get("origin"), self.allowed_origins):
            return json_error(403, "forbidden_origin",
                              f"Origin {headers.get('origin', '')[:100]!r} is not allowed; add "
                              "it to COLAFLOW_ALLOWED_ORIGINS")
        return None

    def session_counts(self) -> dict[str, int]:
        """Open sessions by protocol era (for ``/metrics``): legacy sessions
        (Mcp-Session-Id, parked ones included), and modern ``subscriptions/listen``
        streams."""
        return {"legacy": len(self.manager.session_ids()),
                "modern": len(self.subscriptions.listen_streams)}

    def status(self) -> dict[str, object]:
        """Counters for ``/health``."""
        return {
            "legacySessionsSubscribed": len(self.subscriptions.sessions),
            "legacySessionsParked": self.manager.parked,
            "listenStreams": len(self.subscriptions.listen_streams),
        }


__all__ = ["McpEndpoint", "host_allowed", "origin_allowed"]
