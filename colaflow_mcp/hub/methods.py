"""McpHub: the methods agents invoke on ``/hubs/mcp``."""

from __future__ import annotations

from typing import Any

from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.hub.connection import HubConnection, HubError

NOT_FOUND = "pending change not found"
INVALID_ID = "invalid pendingChangeId: must be a UUID"


class McpHub:
    """SubscribeToPendingChange / UnsubscribeFromPendingChange over the notifier."""

    def __init__(self, notifier: Notifier, max_subscriptions: int) -> None:
        self.notifier = notifier
        self.max_subscriptions = max_subscriptions

    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        """Run a hub method for ``conn``; HubError is the caller's completion error."""
        if target == "SubscribeToPendingChange":
            _arity(arguments, 1)
            return await self.subscribe(conn, _change_id(arguments[0]))
        if target == "UnsubscribeFromPendingChange":
            _arity(arguments, 1)
            self.unsubscribe(conn, _change_id(arguments[0]))
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
        snapshot = await self.notifier.subscribe(conn, change_id)
        if snapshot is None:
            raise HubError(NOT_FOUND)
        if conn.closed:  # closed while we read: leave nothing registered
            self.notifier.unregister(conn, change_id)
        else:
            conn.subscriptions.add(change_id)
        return snapshot

    def unsubscribe(self, conn: HubConnection, change_id: str) -> None:
        """Stop sending this change's decision to ``conn``."""
        conn.subscriptions.discard(change_id)
        self.notifier.unregister(conn, change_id)

    def closed(self, conn: HubConnection) -> None:
        """The connection closed: drop its registrations."""
        self.notifier.unregister_all(conn, conn.subscriptions)
        conn.subscriptions.clear()


def _change_id(value: Any) -> str:
    try:
        return parse_change_id(value)
    except InvalidArguments:
        raise HubError(INVALID_ID) from None


def _arity(arguments: list[Any], expected: int) -> None:
    if len(arguments) != expected:
        raise HubError(
            f"Invocation provides {len(arguments)} argument(s) but target expects {expected}."
        )
