"""HubServer: negotiate, admission of every transport request, timers, revocation, shutdown.

The app mounts :meth:`HubServer.app` (``routes`` behind a WebSocket shortcut) under
``/hubs/mcp``, the runtime has its supervisor run
:meth:`HubServer.run_timers`, feeds the revocation pass into
:meth:`HubServer.drop_revoked` and awaits :meth:`HubServer.shutdown` before stopping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

import anyio
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from colaflow_mcp import logs
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.auth import Authenticator, Principal, credential_from
from colaflow_mcp.http import NO_STORE
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub.connection import HubConnection, Transport
from colaflow_mcp.hub.longpolling import LongPollingTransport
from colaflow_mcp.hub.methods import McpHub
from colaflow_mcp.hub.outbound import Limits
from colaflow_mcp.hub.registry import Connections, NoConnection
from colaflow_mcp.hub.sse import SseTransport
from colaflow_mcp.hub.websockets import WebSocketTransport, deny
from colaflow_mcp.store.engine import unavailable

logger = logging.getLogger(__name__)


class HubServer:
    """The SignalR endpoint for agents and reviewers: ``/negotiate`` and ``/`` (all three
    transports)."""

    def __init__(self, settings: Settings, auth: Authenticator, notifier: Notifier) -> None:
        self.settings = settings
        self.auth = auth
        self.hub = McpHub(notifier, settings.hub_max_subscriptions_per_connection)
        self.registry = Connections(self.hub, Limits(
            max_message_bytes=settings.hub_max_message_bytes,
            outbound_queue_size=settings.hub_outbound_queue_size,
            max_queued_bytes=settings.hub_max_queued_bytes,
            drain_timeout=settings.hub_drain_timeout_seconds,
        ), max_per_owner=settings.hub_max_connections_per_key, tagged=settings.tagged)
        self.websockets = WebSocketTransport(self.registry, settings.hub_flush_grace_seconds)
        self.sse = SseTransport(settings.hub_flush_grace_seconds)
        self.long_polling = LongPollingTransport(self.registry, settings.hub_long_poll_seconds)
        self.routes: list[BaseRoute] = [
            Route("/negotiate", self.negotiate, methods=["POST"]),
            Route("/", self.http_endpoint, methods=["GET", "POST", "DELETE"]),
            WebSocketRoute("/", self.websocket_endpoint),
        ]

    def app(self) -> ASGIApp:
        """The hub as one ASGI app: a WebSocket at ``/`` goes straight to its endpoint, the
        rest (negotiate, SSE, long polling) through Starlette's router.

        Not through the router for the WebSocket: every frame of an ASGI stack stays
        alive as long as the socket, and Starlette's second stack (application, error and
        exception middleware, router, route, session wrapper) was ~3 KiB per idle
        connection (issue 14). Nothing in it acts on a WebSocket the hub serves: the
        endpoint raises no ``WebSocketException``, and an unexpected error reaches uvicorn
        either way (it closes the socket, 1011, and logs it).
        """
        router = Starlette(routes=self.routes)
        endpoint = self.websocket_endpoint

        def hub_app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            if scope["type"] == "websocket" and scope["path"] == "/":
                return endpoint(WebSocket(scope, receive, send))
            return router(scope, receive, send)

        return hub_app

    @property
    def connections(self) -> dict[str, HubConnection]:
        """Token → connection (read-only use: tests, diagnostics)."""
        return self.registry.by_token

    @property
    def closing(self) -> bool:
        """Shutting down: no new connections."""
        return self.registry.closing

    async def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller of a hub request (see ``credential_from``; ``access_token`` allowed)."""
        credential = credential_from(conn.headers, conn.query_params)
        if not credential:
            return None
        principal: Principal | None = None
        try:
            principal = await self.auth.authenticate(credential)
        except Exception as exc:
            if unavailable(exc):  # not the key's fault: 503, so that clients come back
                logger.debug("hub authentication: database unavailable (%s)",
                             type(exc).__name__)
                raise DatabaseUnavailable from None
            logger.exception("hub authentication failed")
        return principal

    # -- HTTP endpoints ---------------------------------------------------------------

    async def negotiate(self, request: Request) -> Response:
        """``POST /negotiate``: a new connection and the transports it may use."""
        try:
            principal = await self.authenticate(request)
        except DatabaseUnavailable:
            return _unavailable()
        if principal is None:
            return _unauthorized()
        if self.closing:
            return PlainTextResponse("Server is shutting down", status_code=503)
        try:
            version = p.negotiate_version(request.query_params.get("negotiateVersion"))
        except p.ProtocolError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        refusal = self.registry.admit(principal)
        if refusal is not None:
            return PlainTextResponse(refusal, status_code=429, headers=NO_STORE)
        conn = self.registry.create(principal, version)
        logs.bind(tenant=principal.tenant_slug, connection_id=conn.connection_id)
        # Stateful reconnect only where the client asks for it (WebSockets, version 1+).
        conn.stateful_allowed = version >= 1 and (
            request.query_params.get("useStatefulReconnect", "").lower() == "true"
        )
        logger.debug("hub connection %s negotiated (tenant %s)", conn.connection_id,
                     principal.tenant_slug)
        body = p.negotiate_response(version, conn.connection_id, conn.token,
                                    stateful_reconnect=conn.stateful_allowed)
        return JSONResponse(body, headers=NO_STORE)

    async def http_endpoint(self, request: Request) -> Response:
        """``/?id=``: SSE stream, long poll, send (POST) or end (DELETE)."""
        try:
            principal = await self.authenticate(request)
        except DatabaseUnavailable:
            return _unavailable()
        if principal is None:
            return _unauthorized()
        try:
            conn = self.registry.lookup(request.query_params.get("id"), principal)
        except NoConnection as exc:
            return PlainTextResponse(exc.detail, status_code=exc.status, headers=NO_STORE)
        logs.bind(tenant=principal.tenant_slug, connection_id=conn.connection_id)
        if request.method == "POST":
            return await self.post(request, conn)
        if request.method == "DELETE":
            return await self.long_polling.delete(conn)
        if "text/event-stream" in request.headers.get("accept", ""):
            return await self.sse.stream(conn)
        return await self.long_polling.poll(conn)

    async def post(self, request: Request, conn: HubConnection) -> Response:
        """The send half of SSE and long polling.

        A send before the first poll is accepted, as ASP.NET Core does (signalrcore's long
        polling sends its handshake first): what it produces waits for the transport.
        """
        if conn.transport is Transport.WEBSOCKETS:
            return PlainTextResponse("POST requests are not allowed for WebSocket "
                                     "connections.", status_code=405)
        if conn.closed:
            return PlainTextResponse("No Connection with that ID", status_code=404)
        if not conn.begin_send():
            return PlainTextResponse("Another send request is in progress.", status_code=409)
        try:
            cap = self.settings.hub_max_message_bytes * 4 + 1024
            body = bytearray()
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > cap:
                    conn.close_too_large("request body too large")
                    return PlainTextResponse("Payload too large", status_code=413)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                conn.close("Connection closed with an error: request body is not UTF-8")
                return PlainTextResponse("Invalid UTF-8", status_code=400)
            await conn.receive(text)
        finally:
            conn.end_send()
        if conn.closed and conn.too_large:
            return PlainTextResponse("Payload too large", status_code=413)
        return Response(status_code=200)

    async def websocket_endpoint(self, websocket: WebSocket) -> None:
        """``/`` upgraded: admit the socket (401/404/409/429/503 before the upgrade), serve
        it."""
        try:
            principal = await self.authenticate(websocket)
        except DatabaseUnavailable:
            await deny(websocket, 503, UNAVAILABLE)
            return
        if principal is None:
            await deny(websocket, 401, "Unauthorized")
            return
        token = websocket.query_params.get("id")
        if token:
            conn = self.registry.get(token)
            if conn is None or conn.closed or not conn.owned_by(principal):
                await deny(websocket, 404, "No Connection with that ID")
                return
            if conn.transport not in (None, Transport.WEBSOCKETS) or (
                conn.stream_attached and not conn.stateful
            ):
                await deny(websocket, 409, "Connection already has a transport")
                return
        else:
            if self.closing:
                await deny(websocket, 503, "Server is shutting down")
                return
            refusal = self.registry.admit(principal)
            if refusal is not None:
                await deny(websocket, 429, refusal)
                return
            conn = self.registry.create(principal, 1)  # skip-negotiation
        logs.bind(tenant=principal.tenant_slug, connection_id=conn.connection_id)
        await self.websockets.serve(websocket, conn)

    # -- timers, revocation, shutdown -------------------------------------------------

    def timer_interval(self) -> float:
        """Seconds between two timer passes over every connection."""
        s = self.settings
        return max(0.01, min(1.0, s.hub_keep_alive_seconds / 3,
                             s.hub_client_timeout_seconds / 4,
                             s.hub_handshake_timeout_seconds / 4,
                             s.hub_disconnect_timeout_seconds / 4))

    async def run_timers(self) -> None:
        """Keep-alive pings and timeouts of every connection; runs until cancelled.

        One pass over every connection per :meth:`timer_interval`, spread over
        ``hub_timer_slices`` callbacks: 10,000 connections in one callback stalled the loop
        for 11-44 ms.
        """
        slices = max(1, self.settings.hub_timer_slices)
        step = self.timer_interval() / slices
        round_: list[HubConnection] = []
        part = 0
        while True:
            await anyio.sleep(step)
            if part == 0:
                round_ = list(self.registry)
            size = -(-len(round_) // slices)
            self.tick(round_[part * size:(part + 1) * size], time.monotonic())
            part = (part + 1) % slices

    def tick(self, conns: list[HubConnection], now: float) -> None:
        """Run these connections' timers once (ping, timeouts, forgetting closed ones)."""
        s = self.settings
        for conn in conns:
            if not self.registry.current(conn):
                continue  # forgotten since the round began
            if conn.closed:
                # A long-polling connection's last poll has had time to take the Close.
                if conn.closed_at is not None and (
                    now - conn.closed_at >= s.hub_disconnect_timeout_seconds
                ):
                    self.registry.forget(conn)
                continue
            try:
                conn.tick(
                    now, keep_alive=s.hub_keep_alive_seconds,
                    client_timeout=s.hub_client_timeout_seconds,
                    handshake_timeout=s.hub_handshake_timeout_seconds,
                    disconnect_timeout=s.hub_disconnect_timeout_seconds,
                )
            except Exception:
                logger.exception("hub timer of %s failed", conn.connection_id)

    def live_key_ids(self) -> set[str]:
        """The API keys of open connections (for the revocation pass)."""
        return {c.principal.api_key_id for c in self.registry
                if not c.closed and c.principal.api_key_id is not None}

    async def drop_revoked(self, revoked: set[str], now_unix: float) -> int:
        """Close connections whose key is in ``revoked`` or whose reviewer token expired."""
        closed = 0
        for conn in self.registry:  # a copy: closing removes connections
            if conn.closed:
                continue
            expires = conn.principal.token_expires
            if conn.principal.api_key_id in revoked:
                conn.close("Connection closed: the API key was revoked or has expired.")
            elif expires is not None and expires <= now_unix:
                # A client whose token factory hands out a fresh token reconnects with it.
                conn.close("Connection closed: the access token has expired.",
                           allow_reconnect=True)
            else:
                continue
            closed += 1
        if closed:
            logger.info("closed %d hub connection(s) of revoked keys or expired tokens", closed)
        return closed

    async def shutdown(self) -> None:
        """Tell every client to reconnect elsewhere (Close, allowReconnect) and close."""
        self.registry.closing = True
        live = [c for c in self.registry if not c.closed]
        for conn in live:
            conn.close("Server is shutting down.", allow_reconnect=True)
        # Give transports a moment to flush the Close message.
        with anyio.move_on_after(self.settings.hub_flush_grace_seconds):
            for conn in live:
                if conn.stream_attached or conn.poll_active:
                    await conn.drained.wait()

    def transport_counts(self) -> dict[str, int]:
        """Open (not closed) connections by transport (for ``/metrics``)."""
        counts: dict[str, int] = {}
        for conn in self.registry.by_token.values():
            if conn.transport is not None and not conn.closed:
                name = conn.transport.value
                counts[name] = counts.get(name, 0) + 1
        return counts

    def status(self) -> dict[str, object]:
        """Connections by state and transport, subscriptions held (for ``/health``)."""
        states: dict[str, int] = {}
        transports: dict[str, int] = {}
        subscriptions = queues = 0
        for conn in self.registry:
            states[conn.state.value] = states.get(conn.state.value, 0) + 1
            if conn.transport is not None and not conn.closed:
                name = conn.transport.value
                transports[name] = transports.get(name, 0) + 1
            subscriptions += len(conn.subscriptions)
            queues += conn.review_queue
        return {"connections": states, "transports": transports,
                "subscriptions": subscriptions, "reviewQueues": queues,
                "closing": self.closing}


def _owner(principal: Principal) -> tuple[str, str | None, str | None]:
    """What the per-key connection cap counts by: the API key, or the reviewer."""
    return (principal.tenant_id, principal.api_key_id, principal.user)


class DatabaseUnavailable(Exception):
    """The credential could not be checked: the database does not answer (503, not 401,
    which clients take as "this key will never work")."""


UNAVAILABLE = "The database does not answer; try again shortly"


def _unavailable() -> Response:
    return PlainTextResponse(UNAVAILABLE, status_code=503,
                             headers={**NO_STORE, "Retry-After": "1"})


def _unauthorized() -> Response:
    return PlainTextResponse("Unauthorized", status_code=401,
                             headers={"WWW-Authenticate": "Bearer"})


__all__ = ["HubServer"]
