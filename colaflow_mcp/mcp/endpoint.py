"""The MCP endpoint: Streamable HTTP at ``/mcp``, both protocol eras, API-key authenticated.

Request path: Host/Origin check → API key → the SDK's session manager. Legacy clients
(``initialize`` + ``Mcp-Session-Id``) get a stateful session with a standalone GET stream
(served from the session's event store); modern (2026-07-28) requests are single
exchanges. Tools are in ``tools`` (generated from the domain's operation table), resources
in ``resources``, subscriptions in ``subscriptions``; every private coupling to the SDK is
in ``sdk_hooks``.
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
from starlette.types import ASGIApp, Receive, Scope, Send

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.auth import KEY_PREFIX, Authenticator, credential_from
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.http import json_error
from colaflow_mcp.mcp import sdk_hooks
from colaflow_mcp.mcp.context import SCOPE_KEY, PrincipalMiddleware
from colaflow_mcp.mcp.event_store import SessionEventStore
from colaflow_mcp.mcp.resources import register_resources
from colaflow_mcp.mcp.subscriptions import Subscriptions
from colaflow_mcp.mcp.tools import build_server

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
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


# -- the endpoint ---------------------------------------------------------------------------

class McpEndpoint:
    """``app`` serves MCP at whatever path it is mounted; the runtime enters ``serving()``."""

    def __init__(self, settings: Settings, auth: Authenticator, changes: ChangeService,
                 queries: Queries, notifier: Notifier) -> None:
        self.settings = settings
        self.auth = auth
        self.allowed_hosts = tuple(settings.allowed_hosts)
        self.allowed_origins = tuple(settings.allowed_origins)
        self.subscriptions = Subscriptions(notifier, settings.mcp_max_subscriptions_per_session,
                                           self._terminate_session)
        self.server = build_server(changes, queries)
        register_resources(self.server, queries)
        lowlevel = sdk_hooks.lowlevel_server(self.server)
        lowlevel.middleware.append(PrincipalMiddleware())
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
            on_session_end=self._session_ended,
            app=lowlevel, json_response=False, stateless=False,
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

    @asynccontextmanager
    async def serving(self, spawn: Spawn) -> AsyncIterator[None]:
        """Run the session manager (a mounted app's own lifespan never runs); session
        pumps are started with ``spawn`` (the supervisor's task group)."""
        self.subscriptions.start(spawn)
        try:
            async with self.manager.run():
                yield
        finally:
            self.subscriptions.stop()

    def _session_ended(self, session_id: str) -> None:
        self.subscriptions.session_closed(session_id)

    async def _terminate_session(self, session_id: str) -> None:
        await self.manager.terminate(session_id)

    def live_key_ids(self) -> set[str]:
        """The API keys of open sessions and listen streams (for the revocation pass)."""
        return self.subscriptions.live_key_ids()

    async def drop_revoked(self, revoked: set[str], now_unix: float) -> int:
        """End the sessions and listen streams of revoked keys (agents hold no tokens)."""
        return await self.subscriptions.drop_revoked(revoked)

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
        credential = credential_from(headers)
        principal = None
        if credential and credential.strip().startswith(KEY_PREFIX):
            principal = await self.auth.authenticate(credential)
        if principal is None or principal.kind != "agent":
            message = ("MCP needs an API key: send 'Authorization: Bearer cola_…' or "
                       "'X-API-Key: cola_…'" if not credential else
                       "invalid, revoked or expired API key")
            await json_error(401, "unauthorized", message,
                             {"WWW-Authenticate": 'Bearer realm="colaflow"'})(
                scope, receive, send)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = principal
        # The SDK binds each session to the credential that opened it (by client_id):
        # another key presenting the session id gets 404, as if it did not exist.
        scope["user"] = AuthenticatedUser(AccessToken(
            token=principal.api_key_id or "", client_id=principal.api_key_id or "", scopes=[],
            subject=principal.tenant_id,
        ))
        if scope["method"] == "GET" and headers.get(MCP_SESSION_ID_HEADER):
            # Every GET stream is served as a replay from the session's event store.
            scope = sdk_hooks.serve_get_from_store(scope)
        await self.manager.handle_request(scope, receive, send)

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

    def status(self) -> dict[str, object]:
        """Counters for ``/health``."""
        return {
            "legacySessionsSubscribed": len(self.subscriptions.sessions),
            "listenStreams": len(self.subscriptions.listen_streams),
        }


__all__ = ["McpEndpoint", "host_allowed", "origin_allowed"]
