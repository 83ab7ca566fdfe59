"""Change events, derived from a pending-change row and identical on every path: the
decision of a decided change, and the creation of a new one (for review queues only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from colaflow_mcp.domain.representation import change_to_json, iso
from colaflow_mcp.domain.uris import pending_change_uri
from colaflow_mcp.store.tables import PendingChange, Status

CREATED_TARGET = "PendingChangeCreated"
HUB_TARGETS = {
    Status.PENDING.value: CREATED_TARGET,
    Status.APPROVED.value: "PendingChangeApproved",
    Status.REJECTED.value: "PendingChangeRejected",
    Status.EXPIRED.value: "PendingChangeExpired",
}


@dataclass(frozen=True)
class DecisionEvent:
    """One decided change, as announced to subscribers; or, with status ``Pending``, one
    new change, announced to review queues only (its payload is the change JSON)."""

    change_id: str
    tenant_id: str
    status: str
    payload: dict[str, Any]
    # When the decision committed (Unix time; for ``colaflow_notify_seconds``): taken
    # after the commit on the deciding instance, carried over the backplane; from the
    # row's ``decided_at`` when the event is rebuilt from the database.
    committed_at: float | None = None

    @property
    def created(self) -> bool:
        """A creation (``PendingChangeCreated``), not a decision."""
        return self.status == Status.PENDING.value

    @property
    def target(self) -> str:
        """The hub method name: ``PendingChangeApproved`` / ``…Rejected`` / ``…Expired``,
        or ``PendingChangeCreated``."""
        return HUB_TARGETS[self.status]

    @property
    def resource_uri(self) -> str:
        """The change's MCP resource."""
        return pending_change_uri(self.change_id)

    def to_json(self, origin: str | None = None) -> str:
        """The backplane message; ``origin`` (the sending instance's backplane id) comes
        first, so a receiver recognises its own messages by their first bytes."""
        fields: dict[str, Any] = {"origin": origin} if origin is not None else {}
        fields.update(changeId=self.change_id, tenantId=self.tenant_id, status=self.status,
                      payload=self.payload, committedAt=self.committed_at)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> DecisionEvent:
        """Parse a backplane message (fields it does not know, such as ``origin``, are
        ignored: an older release reads a newer one's messages, and the other way round)."""
        data = json.loads(raw)
        committed = data.get("committedAt")  # absent from an older release's messages
        return cls(
            change_id=str(data["changeId"]), tenant_id=str(data["tenantId"]),
            status=str(data["status"]), payload=dict(data["payload"]),
            committed_at=float(committed) if isinstance(committed, int | float) else None,
        )


def created_event(change: PendingChange) -> DecisionEvent:
    """The creation event of a pending change: its whole JSON, as the review queue shows it."""
    return DecisionEvent(change_id=change.id, tenant_id=change.tenant_id,
                         status=Status.PENDING.value, payload=change_to_json(change))


def event_from_change(change: PendingChange, committed_at: float | None = None
                      ) -> DecisionEvent:
    """The decision event of a decided change (the contract's camelCase payload);
    ``committed_at`` defaults to the row's ``decided_at``."""
    if change.status not in HUB_TARGETS or change.status == Status.PENDING.value:
        raise ValueError(f"change {change.id} is not decided ({change.status})")
    payload: dict[str, Any] = {
        "pendingChangeId": change.id,
        "status": change.status,
        "toolName": change.tool_name,
    }
    if change.status == Status.APPROVED.value:
        result = change.execution_result or {}
        payload.update(
            operation=change.operation,
            entityType=change.entity_type,
            entityId=result.get("entityId") or change.entity_id,
            approvedBy=change.decided_by,
            executionResult={
                "success": bool(result.get("success")),
                "entityId": result.get("entityId"),
                "error": result.get("error"),
            },
            # Whether the reviewer changed the arguments before approving; then also what
            # was applied (the agent knows what it proposed).
            edited=bool(change.edited),
        )
        if change.edited:
            payload["arguments"] = change.arguments
    elif change.status == Status.REJECTED.value:
        payload.update(reason=change.reason, rejectedBy=change.decided_by)
    payload["timestamp"] = iso(change.decided_at)
    if committed_at is None and change.decided_at is not None:
        decided = change.decided_at
        committed_at = (decided if decided.tzinfo else decided.replace(tzinfo=UTC)).timestamp()
    return DecisionEvent(
        change_id=change.id, tenant_id=change.tenant_id, status=change.status, payload=payload,
        committed_at=committed_at,
    )

