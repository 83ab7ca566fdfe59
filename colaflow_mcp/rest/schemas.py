"""The REST API's request and response models: handlers validate with them, and
``/openapi.json`` is generated from them (``rest/openapi.py``), so the document cannot
drift from what the handlers accept.

Responses are built by the domain's JSON functions (``change_to_json`` …, shared with MCP
and the hub); the response models describe them exactly (``extra="forbid"``: a field
added there and not here fails the schema tests, tests/core/test_openapi.py).
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from colaflow_mcp.domain.audit import DEFAULT_LIMIT, MAX_LIMIT
from colaflow_mcp.domain.changes import MAX_RATIONALE, MAX_REASON
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.queries import MAX_PAGE, MAX_PAGE_SIZE
from colaflow_mcp.store.tables import Status

Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC, e.g. 2026-01-31T12:00:00.000Z")]


def invalid(exc: ValidationError, where: str = "") -> InvalidArguments:
    """A validation error as the 400's message: ``field: problem; …``, JSON's words."""
    parts = []
    for err in exc.errors():
        loc = where + ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "dict_type":
            parts.append(f"{loc or 'body'} must be an object")
        elif err["type"] == "greater_than" and err.get("ctx", {}).get("gt") == 0:
            parts.append(f"{loc}: must be a positive number")
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    return InvalidArguments("; ".join(parts))


# -- requests -----------------------------------------------------------------------------

class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, as before


class ProposeRequest(_Request):
    """``POST /api/mcp/pending-changes`` (agents): what a proposing MCP tool takes."""

    tool: str = Field(validation_alias=AliasChoices("tool", "toolName"),
                      description="The proposing tool, e.g. create_issue (toolName is "
                                  "accepted too).")
    arguments: dict[str, Any] = Field(default_factory=dict,
                                      description="The tool's arguments (see docs/mcp.md).")
    expiresInSeconds: Seconds | None = Field(
        None, description="Expire sooner than the server's TTL (capped by it).")
    rationale: str | None = Field(None, max_length=MAX_RATIONALE,
                                  description="Why the agent wants this (shown to reviewers).")


class ApproveRequest(_Request):
    """``POST …/{id}/approve`` (reviewers): optionally, complete arguments to apply instead
    of the agent's (validated like the tool call; the diff is recomputed)."""

    arguments: dict[str, Any] | None = Field(
        None, description="Complete arguments for the change's tool (an edit).")

    @model_validator(mode="before")
    @classmethod
    def _no_misspelt_arguments(cls, data: Any) -> Any:
        # Other fields are ignored, but a misspelt "arguments" must not approve the
        # unedited change.
        if isinstance(data, dict):
            misspelt = sorted(k for k in data if isinstance(k, str) and k != "arguments"
                              and difflib.get_close_matches(k.lower(), ["arguments"], n=1,
                                                            cutoff=0.6))
            if misspelt:
                raise ValueError(f"unknown field {misspelt[0]!r}: did you mean \"arguments\" "
                                 "(complete arguments for the tool)? Nothing was approved")
        return data


class RejectRequest(_Request):
    """``POST …/{id}/reject`` (reviewers)."""

    reason: str = Field(min_length=1, max_length=MAX_REASON,
                        description="Why (shown to the agent). Required.")


class ListChangesQuery(_Request):
    """``GET /api/mcp/pending-changes`` query."""

    status: Status | None = Field(None, description="Only changes of this status.")
    page: int = Field(1, ge=1, le=MAX_PAGE, description="1-based page number.")
    pageSize: int = Field(20, ge=1, le=MAX_PAGE_SIZE, description="Changes per page.")


class AuditQuery(_Request):
    """``GET /api/audit`` query."""

    changeId: str | None = Field(None, description="Only entries of this pending change.")
    after: int = Field(0, ge=0, le=2**62, description="Entries after this seq (paging).")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Entries per page.")


# -- responses ----------------------------------------------------------------------------

class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposedBy(_Response):
    keyId: str | None
    keyName: str | None


class ExecutionResult(_Response):
    success: bool
    entityId: str | None
    error: str | None


class Change(_Response):
    """A pending change (REST body, MCP resource, hub snapshot)."""

    id: str
    pendingChangeId: str
    status: Status
    toolName: str
    operation: str
    entityType: str
    entityId: str | None
    proposedBy: ProposedBy
    rationale: str | None
    proposedArguments: dict[str, Any]
    arguments: dict[str, Any]
    edited: bool
    editedBy: str | None
    diff: dict[str, Any] = Field(description="Preview: before, after, changedFields.")
    summary: str
    resourceUri: str
    createdAt: Timestamp | None
    expiresAt: Timestamp | None
    decidedAt: Timestamp | None
    decidedBy: str | None
    reason: str | None
    executionResult: ExecutionResult | None


class ChangePage(_Response):
    items: list[Change]
    total: int
    page: int
    pageSize: int


class Actor(_Response):
    type: Literal["agent", "reviewer", "system", "operator"]
    id: str | None
    name: str | None


class AuditEntry(_Response):
    seq: int
    at: Timestamp | None
    actor: Actor
    action: str
    changeId: str | None
    data: Any
    prevHash: str
    hash: str


class AuditPage(_Response):
    entries: list[AuditEntry]
    next: int | None = Field(description="The 'after' of the next page; null on the last.")


class Project(_Response):
    id: str
    key: str
    name: str
    description: str
    issueCount: int


class ProjectList(_Response):
    items: list[Project]


class Comment(_Response):
    id: str
    author: str
    body: str
    createdAt: Timestamp | None


class Issue(_Response):
    id: str
    key: str
    projectKey: str
    title: str
    description: str
    type: str
    status: str
    priority: str
    assignee: str | None
    createdAt: Timestamp | None
    updatedAt: Timestamp | None
    comments: list[Comment]


class Error(_Response):
    """Every error: a code, a message that says what to fix."""

    error: str
    message: str
    currentStatus: Status | None = Field(None, description="409 only: the change's status.")


class Health(BaseModel):
    """``/health``: details for people (the fields may grow)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    backplane: dict[str, Any]
    loops: dict[str, bool]
    loopPasses: dict[str, int]
    instance: str


class Liveness(_Response):
    status: Literal["alive"]


class Readiness(_Response):
    """``/health/ready``: 200 when every check passes, else 503 naming what fails."""

    status: Literal["ready", "not ready"]
    failing: list[str] = Field(description="What is not ready, e.g. 'database', "
                                           "'loop:expiry', 'backplane', 'stopping'.")
    checks: dict[str, bool]
