"""Decision events: derived from a decided pending-change row, identical on every path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from colaflow_mcp.models import PendingChange, Status

HUB_TARGETS = {
    Status.APPROVED.value: "PendingChangeApproved",
    Status.REJECTED.value: "PendingChangeRejected",
    Status.EXPIRED.value: "PendingChangeExpired",
}


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True)
class DecisionEvent:
    """One decided change, as announced to subscribers."""

    change_id: str
    tenant_id: str
    status: str
    payload: dict[str, Any]

    @property
    def target(self) -> str:
        """The hub method name: ``PendingChangeApproved`` / ``…Rejected`` / ``…Expired``."""
        return HUB_TARGETS[self.status]

    @property
    def resource_uri(self) -> str:
        return resource_uri(self.change_id)

    def to_json(self) -> str:
        return json.dumps(
            {"changeId": self.change_id, "tenantId": self.tenant_id, "status": self.status,
             "payload": self.payload},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> DecisionEvent:
        data = json.loads(raw)
        return cls(
            change_id=str(data["changeId"]), tenant_id=str(data["tenantId"]),
            status=str(data["status"]), payload=dict(data["payload"]),
        )


def resource_uri(change_id: str) -> str:
    return f"colaflow://pending-changes/{change_id}"


def event_from_change(change: PendingChange) -> DecisionEvent:
    """The decision event of a decided change (the contract's camelCase payload)."""
    if change.status not in HUB_TARGETS:
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
        )
    elif change.status == Status.REJECTED.value:
        payload.update(reason=change.reason, rejectedBy=change.decided_by)
    payload["timestamp"] = iso(change.decided_at)
    return DecisionEvent(
        change_id=change.id, tenant_id=change.tenant_id, status=change.status, payload=payload
    )


def change_to_json(change: PendingChange) -> dict[str, Any]:
    """The full change as camelCase JSON (REST body, MCP resource, hub snapshot)."""
    return {
        "id": change.id,
        "pendingChangeId": change.id,
        "status": change.status,
        "toolName": change.tool_name,
        "operation": change.operation,
        "entityType": change.entity_type,
        "entityId": change.entity_id,
        "arguments": change.arguments,
        "diff": change.diff,
        "summary": change.summary,
        "resourceUri": resource_uri(change.id),
        "createdAt": iso(change.created_at),
        "expiresAt": iso(change.expires_at),
        "decidedAt": iso(change.decided_at),
        "decidedBy": change.decided_by,
        "reason": change.reason,
        "executionResult": change.execution_result,
    }
