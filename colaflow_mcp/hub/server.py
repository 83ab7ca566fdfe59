"""HubServer: negotiate, the connection registry, timers, revocation and shutdown.

The host app mounts ``routes`` under ``/hubs/mcp``, runs :meth:`HubServer.run` in its task
group and awaits :meth:`HubServer.shutdown` on exit.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

import anyio
from sqlmodel import col, select
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from colaflow_mcp.auth import Principal, bearer
from colaflow_mcp.hub import longpolling, sse, websockets
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub.connection import (
    ConnectionState,
    HubConnection,
    Limits,
    Transport,
)
from colaflow_mcp.hub.hub import McpHub
from colaflow_mcp.models import ApiKey, utcnow

if TYPE_CHECKING:
    from colaflow_mcp.services import Services

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-cache, no-store"}


class NoConnection(Exception):
    """A transport request that cannot be matched to a connection (status, body)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def response(self) -> Response:
        return PlainTextResponse(self.detail, status_code=self.status, headers=NO_STORE)


TIMER_SLICES = 10


class HubServer:
    """The SignalR endpoint for agents: ``/negotiate`` and ``/`` (all three transports)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.hub = McpHub(services.notifier, self.settings.hub_max_subscriptions_per_connection)
        self.limits = Limits(
            max_message_bytes=self.settings.hub_max_message_bytes,
            outbound_queue_size=self.settings.hub_outbound_queue_size,
            max_queued_bytes=self.settings.hub_max_queued_bytes,
            drain_timeout=self.settings.hub_drain_timeout_seconds,
        )
        # token -> connection; a closed connection stays until its transport is told
        self.connections: dict[str, HubConnection] = {}
        # Live (not closed) connections per owner (API key, or reviewer): see admit().
        self._live_per_owner: dict[tuple[str, str | None, str | None], int] = {}
        self.closing = False
        ws = websockets.WebSocketTransport(self)
        self.sse = sse.SseTransport(self)
        self.long_polling = longpolling.LongPollingTransport(self)
        self.routes: list[BaseRoute] = [
            Route("/negotiate", self.negotiate, methods=["POST"]),
            Route("/", self.http_endpoint, methods=["GET", "POST", "DELETE"]),
            WebSocketRoute("/", ws.endpoint),
        ]

    # -- connections ------------------------------------------------------------------

    async def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller of a hub request: ``Authorization: Bearer`` or ``access_token``."""
        credential = bearer(conn.headers.get("authorization")) or conn.query_params.get(
            "access_token"
        )
        if not credential:
            return None
        principal: Principal | None = None
        try:
            principal = await self.services.auth.authenticate(credential)
        except Exception:
            logger.exception("hub authentication failed")
        return principal

    def admit(self, principal: Principal) -> str | None:
        """Why ``principal`` may not open another connection (at its cap), else None."""
        limit = self.settings.hub_max_connections_per_key
        if self._live_per_owner.get(_owner(principal), 0) < limit:
            return None
        who = "API key" if principal.api_key_id is not None else "reviewer"
        return (f"Too many hub connections for this {who} (limit {limit}): close connections "
                "you no longer use, or reuse one for several subscriptions.")

    def create_connection(self, principal: Principal, negotiate_version: int) -> HubConnection:
        """A new connection (the caller checked :meth:`admit`)."""
        # Both carry the instance's routing tag (the token is the ``id`` of every later
        # request; version 0 clients use the connection id, which is then the secret).
        connection_id = self.settings.tagged(secrets.token_urlsafe(16))
        token = (self.settings.tagged(secrets.token_urlsafe(32)) if negotiate_version >= 1
                 else connection_id)
        conn = HubConnection(
            connection_id=connection_id, token=token, principal=principal, hub=self.hub,
            limits=self.limits, on_closed=self._closed,
        )
        self.connections[token] = conn
        owner = _owner(principal)
        self._live_per_owner[owner] = self._live_per_owner.get(owner, 0) + 1
        return conn

    def _closed(self, conn: HubConnection) -> None:
        owner = _owner(conn.principal)
        left = self._live_per_owner.get(owner, 0) - 1
        if left > 0:
            self._live_per_owner[owner] = left
        else:
            self._live_per_owner.pop(owner, None)
        if conn.close_error:
            logger.info("hub connection %s closed: %s", conn.connection_id, conn.close_error)
        else:
            logger.debug("hub connection %s closed", conn.connection_id)
        # Long polling needs the closed connection a while longer (its last poll gets
        # the Close message, then 204); other transports are done with it.
        if conn.transport is not Transport.LONG_POLLING:
            self.connections.pop(conn.token, None)

    def forget(self, conn: HubConnection) -> None:
        self.connections.pop(conn.token, None)

    def lookup(self, request: HTTPConnection, principal: Principal) -> HubConnection:
        """The connection named by ``?id=``, owned by this caller; else NoConnection."""
        token = request.query_params.get("id")
        if not token:
            raise NoConnection(400, "Connection ID required")
        conn = self.connections.get(token)
        if conn is None or not conn.owned_by(principal):
            raise NoConnection(404, "No Connection with that ID")
        return conn

    # -- HTTP endpoints ---------------------------------------------------------------

    async def negotiate(self, request: Request) -> Response:
        principal = await self.authenticate(request)
        if principal is None:
            return _unauthorized()
        if self.closing:
            return PlainTextResponse("Server is shutting down", status_code=503)
        try:
            version = p.negotiate_version(request.query_params.get("negotiateVersion"))
        except p.ProtocolError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        refusal = self.admit(principal)
        if refusal is not None:
            return PlainTextResponse(refusal, status_code=429, headers=NO_STORE)
        conn = self.create_connection(principal, version)
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
        principal = await self.authenticate(request)
        if principal is None:
            return _unauthorized()
        try:
            conn = self.lookup(request, principal)
        except NoConnection as exc:
            return exc.response()
        if request.method == "POST":
            return await self.post(request, conn)
        if request.method == "DELETE":
            return await self.long_polling.delete(conn)
        if "text/event-stream" in request.headers.get("accept", ""):
            return await self.sse.stream(request, conn)
        return await self.long_polling.poll(request, conn)

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
        if conn.posting:
            return PlainTextResponse("Another send request is in progress.", status_code=409)
        conn.posting = True
        try:
            cap = self.settings.hub_max_message_bytes * 4 + 1024
            body = bytearray()
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > cap:
                    conn.too_large = True
                    conn.close("Connection closed with an error: request body too large")
                    return PlainTextResponse("Payload too large", status_code=413)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                conn.close("Connection closed with an error: request body is not UTF-8")
                return PlainTextResponse("Invalid UTF-8", status_code=400)
            await conn.receive(text)
        finally:
            conn.posting = False
        if conn.closed and conn.too_large:
            return PlainTextResponse("Payload too large", status_code=413)
        return Response(status_code=200)

    # -- background loop and shutdown -------------------------------------------------

    async def run(self) -> None:
        """Timers (ping, timeouts) and revocation checks; runs until cancelled."""
        s = self.settings
        tick = max(0.01, min(1.0, s.hub_keep_alive_seconds / 3, s.hub_client_timeout_seconds / 4,
                             s.hub_handshake_timeout_seconds / 4,
                             s.hub_disconnect_timeout_seconds / 4))
        next_revocation = time.monotonic() + s.revocation_check_interval_seconds
        # One pass over every connection per ``tick`` seconds, spread over TIMER_SLICES
        # callbacks: 10,000 connections in one callback stalled the loop for 11-44 ms.
        step = tick / TIMER_SLICES
        round_: list[HubConnection] = []
        part = 0
        while True:
            await anyio.sleep(max(0.0, min(step, next_revocation - time.monotonic())))
            if part == 0:
                round_ = list(self.connections.values())
            size = -(-len(round_) // TIMER_SLICES)
            try:
                self._tick_connections(round_[part * size:(part + 1) * size], time.monotonic())
            except Exception:
                logger.exception("hub timer pass failed")
            part = (part + 1) % TIMER_SLICES
            if time.monotonic() >= next_revocation:
                next_revocation = time.monotonic() + s.revocation_check_interval_seconds
                try:
                    await self.check_revocations()
                except Exception:
                    logger.exception("hub revocation check failed; retrying next interval")

    def tick(self, now: float) -> None:
        """Run every connection's timers once (ping, timeouts, forgetting closed ones)."""
        self._tick_connections(list(self.connections.values()), now)

    def _tick_connections(self, conns: list[HubConnection], now: float) -> None:
        s = self.settings
        for conn in conns:
            if self.connections.get(conn.token) is not conn:
                continue  # forgotten since the round began
            if conn.closed:
                # A long-polling connection's last poll has had time to take the Close.
                if conn.closed_at is not None and (
                    now - conn.closed_at >= s.hub_disconnect_timeout_seconds
                ):
                    self.forget(conn)
                continue
            conn.tick(
                now, keep_alive=s.hub_keep_alive_seconds,
                client_timeout=s.hub_client_timeout_seconds,
                handshake_timeout=s.hub_handshake_timeout_seconds,
                disconnect_timeout=s.hub_disconnect_timeout_seconds,
            )

    async def check_revocations(self, chunk: int = 500) -> None:
        """Close the connections of keys that were revoked, expired or deleted, and of
        reviewer tokens that have expired.

        One query per ``chunk`` distinct keys, however many connections share them.
        """
        by_key: dict[str, list[HubConnection]] = {}
        now_unix = time.time()
        # A copy: closing a connection removes it from ``self.connections``.
        for conn in list(self.connections.values()):
            if conn.closed:
                continue
            if conn.principal.api_key_id is not None:
                by_key.setdefault(conn.principal.api_key_id, []).append(conn)
            expires = conn.principal.token_expires
            if expires is not None and expires <= now_unix:
                # A client whose token factory hands out a fresh token reconnects with it.
                conn.close("Connection closed: the access token has expired.",
                           allow_reconnect=True)
        key_ids = list(by_key)
        now = utcnow()
        for i in range(0, len(key_ids), chunk):
            ids = key_ids[i : i + chunk]
            async with self.services.db.read() as s:
                rows = (await s.exec(
                    select(ApiKey.id, ApiKey.revoked_at, ApiKey.expires_at)
                    .where(col(ApiKey.id).in_(ids))
                )).all()
            usable = {
                key_id for key_id, revoked_at, expires_at in rows
                if revoked_at is None and (expires_at is None or expires_at > now)
            }
            for key_id in ids:
                if key_id in usable:
                    continue
                conns = [c for c in by_key[key_id] if not c.closed]
                if conns:
                    logger.info("closing %d hub connection(s) of a revoked key", len(conns))
                for conn in conns:
                    conn.close("Connection closed: the API key was revoked or has expired.")

    async def shutdown(self) -> None:
        """Tell every client to reconnect elsewhere (Close, allowReconnect) and close."""
        self.closing = True
        live = [c for c in self.connections.values() if not c.closed]
        for conn in live:
            conn.close("Server is shutting down.", allow_reconnect=True)
        # Give transports a moment to flush the Close message.
        with anyio.move_on_after(1.0):
            for conn in live:
                if conn.stream_attached or conn.poll_active:
                    await conn.drained.wait()

    def status(self) -> dict[str, object]:
        """Connections by state and transport, subscriptions held (for ``/health``)."""
        states: dict[str, int] = {}
        transports: dict[str, int] = {}
        subscriptions = 0
        for conn in self.connections.values():
            states[conn.state.value] = states.get(conn.state.value, 0) + 1
            if conn.transport is not None and not conn.closed:
                name = conn.transport.value
                transports[name] = transports.get(name, 0) + 1
            subscriptions += len(conn.subscriptions)
        return {"connections": states, "transports": transports,
                "subscriptions": subscriptions, "closing": self.closing}


def _owner(principal: Principal) -> tuple[str, str | None, str | None]:
    """What the per-key connection cap counts by: the API key, or the reviewer."""
    return (principal.tenant_id, principal.api_key_id, principal.user)


def _unauthorized() -> Response:
    return PlainTextResponse("Unauthorized", status_code=401,
                             headers={"WWW-Authenticate": "Bearer"})


__all__ = ["ConnectionState", "HubServer"]
