"""McpHub: the methods agents and reviewers invoke on ``/hubs/mcp``."""

from __future__ import annotations

from typing import Any

from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.hub.connection import NO_SUBSCRIPTIONS, HubConnection, HubError

NOT_FOUND = "pending change not found"
INVALID_ID = "invalid pendingChangeId: must be a UUID"
REVIEWERS_ONLY = ("the review queue is for reviewers: connect with a reviewer token "
                  "(colaflow-mcp token), not an API key")


class McpHub:
    """SubscribeToPendingChange / UnsubscribeFromPendingChange (anyone) and
    SubscribeToReviewQueue / UnsubscribeFromReviewQueue (reviewers), over the notifier."""

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
        if target == "SubscribeToReviewQueue":
            _arity(arguments, 0)
            return {"pending": await self.subscribe_queue(conn)}
        if target == "UnsubscribeFromReviewQueue":
            _arity(arguments, 0)
            _reviewer(conn)
            self.unsubscribe_queue(conn)
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
            if isinstance(conn.subscriptions, set):
                conn.subscriptions.add(change_id)
            else:  # the shared empty one (connection.NO_SUBSCRIPTIONS)
                conn.subscriptions = {change_id}
        return snapshot

    def unsubscribe(self, conn: HubConnection, change_id: str) -> None:
        """Stop sending this change's decision to ``conn``."""
        if isinstance(conn.subscriptions, set):
            conn.subscriptions.discard(change_id)
        self.notifier.unregister(conn, change_id)

    async def subscribe_queue(self, conn: HubConnection) -> list[dict[str, Any]]:
        """Register ``conn`` for its tenant's creations and decisions; the pending changes,
        newest first."""
        _reviewer(conn)
        pending = await self.notifier.subscribe_queue(conn)
        if conn.closed:  # closed while we read: leave nothing registered
            self.notifier.unregister_queue(conn)
        else:
            conn.review_queue = True
        return pending

    def unsubscribe_queue(self, conn: HubConnection) -> None:
        """Stop sending the tenant's creations and decisions to ``conn``."""
        conn.review_queue = False
        self.notifier.unregister_queue(conn)

    def closed(self, conn: HubConnection) -> None:
        """The connection closed: drop its registrations."""
        watched, conn.subscriptions = conn.subscriptions, NO_SUBSCRIPTIONS
        self.notifier.unregister_all(conn, watched)
        if conn.review_queue:
            self.unsubscribe_queue(conn)


def _reviewer(conn: HubConnection) -> None:
    if conn.principal.kind != "reviewer":
        raise HubError(REVIEWERS_ONLY)


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
