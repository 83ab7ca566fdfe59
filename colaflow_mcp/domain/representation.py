"""The JSON of the contract (camelCase): changes, proposals, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from colaflow_mcp.domain.uris import pending_change_uri
from colaflow_mcp.store.tables import PendingChange


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` (a naive ``dt`` is UTC, as the store keeps them)."""
    if dt is None:
        return None
    tz = dt.tzinfo
    if tz is not None:
        if tz is not UTC:
            dt = dt.astimezone(UTC)
        dt = dt.replace(tzinfo=None)
    # No astimezone for naive values: on those it first asks the C library for the local
    # zone (a quarter of this function's time on every change, event and audit entry).
    return dt.isoformat(timespec="milliseconds") + "Z"


def change_to_json(change: PendingChange) -> dict[str, Any]:
    """The full change as camelCase JSON (REST body, MCP resource, hub snapshot).

    ``proposedArguments`` is what the agent sent, ``arguments`` what is (or was) applied:
    the same unless a reviewer edited them before approving (``edited``, ``editedBy``).
    """
    return {
        "id": change.id,
        "pendingChangeId": change.id,
        "status": change.status,
        "toolName": change.tool_name,
        "operation": change.operation,
        "entityType": change.entity_type,
        "entityId": change.entity_id,
        "proposedBy": {"keyId": change.api_key_id, "keyName": change.api_key_name},
        "rationale": change.rationale,
        "proposedArguments": change.proposed_arguments,
        "arguments": change.arguments,
        "edited": bool(change.edited),
        "editedBy": change.edited_by,
        "diff": change.diff,
        "summary": change.summary,
        "resourceUri": pending_change_uri(change.id),
        "createdAt": iso(change.created_at),
        "expiresAt": iso(change.expires_at),
        "decidedAt": iso(change.decided_at),
        "decidedBy": change.decided_by,
        "reason": change.reason,
        "executionResult": change.execution_result,
    }


class Proposal(BaseModel):
    """What every proposing tool returns."""

    pendingChangeId: str = Field(description="Id of the pending change.")
    status: str = Field(description="Always 'Pending' when proposed.")
    resourceUri: str = Field(description="Subscribe to this resource to learn the decision.")
    expiresAt: str | None = Field(description="When the proposal expires unreviewed (UTC).")
    diff: dict[str, Any] = Field(description="Preview: before, after, changedFields.")
    summary: str = Field(description="One line describing the proposed change.")


def proposal_json(change: PendingChange) -> dict[str, Any]:
    """The proposal a proposing tool answers with (a :class:`Proposal` as JSON; the model
    is not built here: the MCP SDK validates a tool's structured content against it)."""
    return {"pendingChangeId": change.id, "status": change.status,
            "resourceUri": pending_change_uri(change.id), "expiresAt": iso(change.expires_at),
            "diff": change.diff, "summary": change.summary}
