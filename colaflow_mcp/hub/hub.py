"""McpHub: the methods agents invoke on ``/hubs/mcp``."""

from __future__ import annotations

import uuid
from typing import Any

import anyio

from colaflow_mcp.hub.connection import HubConnection, HubError
from colaflow_mcp.notify import Notifier

NOT_FOUND = "pending change not found"
DB_CALL_SECONDS = 10.0
INVALID_ID = "invalid pendingChangeId: must be a UUID"


def parse_change_id(value: Any) -> str:
    """The canonical form of a pending-change id, or HubError."""
    if not isinstance(value, str) or len(value) > 64:
        raise HubError(INVALID_ID)
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise HubError(INVALID_ID) from None


class McpHub:
    """SubscribeToPendingChange / UnsubscribeFromPendingChange over the notifier."""

    def __init__(self, notifier: Notifier, max_subscriptions: int) -> None:
        self.notifier = notifier
        self.max_subscriptions = max_subscriptions

    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        if target == "SubscribeToPendingChange":
            _arity(arguments, 1)
            return await self.subscribe(conn, parse_change_id(arguments[0]))
        if target == "UnsubscribeFromPendingChange":
            _arity(arguments, 1)
            self.unsubscribe(conn, parse_change_id(arguments[0]))
            return None
        raise HubError(f"Unknown hub method '{target}'")

    async def subscribe(self, conn: HubConnection, change_id: str) -> dict[str, Any]:
        """Register for the change's decision and return its snapshot."""
        if change_id not in conn.subscriptions and (
            len(conn.subscriptions) >= self.max_subscriptions
        ):
            raise HubError(
                f"subscription limit reached ({self.max_subscriptions} per connection); "
                "unsubscribe from decided changes first"
            )
        # Shielded: the registration and the read behind it finish together, so a
        # cancellation (the socket closed) never strands a registration.
        with anyio.CancelScope(shield=True), anyio.fail_after(DB_CALL_SECONDS):
            snapshot = await self.notifier.subscribe(conn, change_id)
        if snapshot is None:
            raise HubError(NOT_FOUND)
        if conn.closed:  # closed while we read: leave nothing registered
            self.notifier.unregister(conn, change_id)
        else:
            conn.subscriptions.add(change_id)
        return snapshot

    def unsubscribe(self, conn: HubConnection, change_id: str) -> None:
        conn.subscriptions.discard(change_id)
        self.notifier.unregister(conn, change_id)

    def closed(self, conn: HubConnection) -> None:
        self.notifier.unregister_all(conn, conn.subscriptions)
        conn.subscriptions.clear()


def _arity(arguments: list[Any], expected: int) -> None:
    if len(arguments) != expected:
        raise HubError(
            f"Invocation provides {len(arguments)} argument(s) but target expects {expected}."
        )
