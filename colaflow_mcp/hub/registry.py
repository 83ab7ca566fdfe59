"""The hub's live connections: created at negotiate, found by token, forgotten once done."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub.connection import Hub, HubConnection, Transport
from colaflow_mcp.hub.outbound import Limits

logger = logging.getLogger(__name__)


class NoConnection(Exception):
    """A transport request that cannot be matched to a connection (status, body)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Connections:
    """Token → connection; a closed connection stays until its transport is told."""

    def __init__(self, hub: Hub, limits: Limits, max_per_owner: int = 100,
                 tagged: Callable[[str], str] = str) -> None:
        self.hub = hub
        self.limits = limits
        self.max_per_owner = max_per_owner
        # Puts the instance's routing tag in front of ids and tokens (Settings.tagged).
        self.tagged = tagged
        self.by_token: dict[str, HubConnection] = {}
        # Live (not closed) connections per owner (API key, or reviewer): see admit().
        self._live_per_owner: dict[tuple[str, str | None, str | None], int] = {}
        self.closing = False  # shutting down: no new connections

    def __iter__(self) -> Iterator[HubConnection]:
        return iter(list(self.by_token.values()))

    def __len__(self) -> int:
        return len(self.by_token)

    def admit(self, principal: Principal) -> str | None:
        """Why ``principal`` may not open another connection (at its cap), else None."""
        limit = self.max_per_owner
        if self._live_per_owner.get(_owner(principal), 0) < limit:
            return None
        who = "API key" if principal.api_key_id is not None else "reviewer"
        return (f"Too many hub connections for this {who} (limit {limit}): close connections "
                "you no longer use, or reuse one for several subscriptions.")

    def create(self, principal: Principal, negotiate_version: int) -> HubConnection:
        """A new connection for ``principal`` (the caller checked :meth:`admit`); its
        token is the secret of every request."""
        # Both carry the instance's routing tag (the token is the ``id`` of every later
        # request; version 0 clients use the connection id, which is then the secret), so
        # a load balancer can route by it (docs/scale-out.md).
        connection_id = self.tagged(secrets.token_urlsafe(16))
        token = (self.tagged(secrets.token_urlsafe(32)) if negotiate_version >= 1
                 else connection_id)
        conn = HubConnection(
            connection_id=connection_id, token=token, principal=principal, hub=self.hub,
            limits=self.limits, on_closed=self._closed,
        )
        self.by_token[token] = conn
        owner = _owner(principal)
        self._live_per_owner[owner] = self._live_per_owner.get(owner, 0) + 1
        return conn

    def get(self, token: str) -> HubConnection | None:
        """The connection with this token (even a closed one not yet forgotten)."""
        return self.by_token.get(token)

    def lookup(self, token: str | None, principal: Principal) -> HubConnection:
        """The connection named by ``?id=``, owned by this caller; else NoConnection."""
        if not token:
            raise NoConnection(400, "Connection ID required")
        conn = self.by_token.get(token)
        if conn is None or not conn.owned_by(principal):
            raise NoConnection(404, "No Connection with that ID")
        return conn

    def current(self, conn: HubConnection) -> bool:
        """Whether ``conn`` is still registered (not forgotten)."""
        return self.by_token.get(conn.token) is conn

    def forget(self, conn: HubConnection) -> None:
        """Drop a closed connection whose transport is done with it."""
        self.by_token.pop(conn.token, None)

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
            self.forget(conn)


def _owner(principal: Principal) -> tuple[str, str | None, str | None]:
    """What the per-key connection cap counts by: the API key, or the reviewer."""
    return (principal.tenant_id, principal.api_key_id, principal.user)
