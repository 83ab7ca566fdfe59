"""The MCP surface: proposing tools, read tools and resources, all scoped to the caller's tenant.

Proposing tools never touch the workspace: each stores a pending change (with a diff
preview) for a human to approve or reject, and returns its id and resource URI.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resources import FunctionResource
from pydantic import BaseModel, BeforeValidator, Field, JsonValue

from colaflow_mcp.changes import ChangeService, Forbidden, NotFound
from colaflow_mcp.events import change_to_json, iso, resource_uri
from colaflow_mcp.mcp_context import require_principal
from colaflow_mcp.models import PendingChange, Status
from colaflow_mcp.workspace import InvalidArguments

INSTRUCTIONS = """\
ColaFlow is a project tracker (projects, issues, comments). You cannot change it directly:
every change tool (create_project, create_issue, update_issue, update_status, add_comment,
delete_issue) only PROPOSES the change. A human reviewer approves it (then it is applied) or
rejects it with a reason; unreviewed proposals expire. Each change tool returns a
pendingChangeId and a resourceUri (colaflow://pending-changes/{id}). To learn the outcome
without polling, subscribe to that resource; you will receive
notifications/resources/updated once it is decided. Then read the resource (or call
get_pending_change): status is Approved, Rejected (see reason) or Expired, and for approved
changes executionResult says whether applying it succeeded. Use list_projects and get_issue
to look things up before proposing."""

_EXPIRES = Field(
    default=None, gt=0,
    description="Optional: seconds the proposal stays open for review before it expires "
                "(capped by the server's maximum review window).",
)


def _not_bool(value: object) -> object:
    # Lax float validation reads ``true`` as 1.0: a one-second review window nobody meant.
    if isinstance(value, bool):
        raise ValueError("expires_in_seconds must be a number of seconds, not a boolean")
    return value


# The validator after the Field, so the constraint stays on the number (null still allowed).
ExpiresIn = Annotated[float | None, _EXPIRES, BeforeValidator(_not_bool)]

ISSUE_TYPES = ["Epic", "Story", "Task", "Bug"]
ISSUE_STATUSES = ["ToDo", "InProgress", "InReview", "Done", "Blocked"]
PRIORITIES = ["Low", "Medium", "High", "Critical"]


def _choice(values: list[str], description: str, optional: bool = False) -> Any:
    # The enum is advertised in the schema for the model; the check itself is the change
    # service's, whose message names the allowed values plainly.
    enum: list[JsonValue] = [*values, None] if optional else list(values)
    return Field(default=None, description=description, json_schema_extra={"enum": enum}) \
        if optional else Field(description=description, json_schema_extra={"enum": enum})


class Proposal(BaseModel):
    """What every proposing tool returns."""

    pendingChangeId: str = Field(description="Id of the pending change.")
    status: str = Field(description="Always 'Pending' when proposed.")
    resourceUri: str = Field(description="Subscribe to this resource to learn the decision.")
    expiresAt: str | None = Field(description="When the proposal expires unreviewed (UTC).")
    diff: dict[str, Any] = Field(description="Preview: before, after, changedFields.")
    summary: str = Field(description="One line describing the proposed change.")


def proposal_result(change: PendingChange) -> types.CallToolResult:
    """Structured proposal plus a one-line summary for the model to read."""
    proposal = Proposal(
        pendingChangeId=change.id, status=change.status, resourceUri=resource_uri(change.id),
        expiresAt=iso(change.expires_at), diff=change.diff, summary=change.summary,
    )
    text = (f"Proposed: {change.summary}. Pending change {change.id} awaits human review "
            f"(expires {proposal.expiresAt}); subscribe to {proposal.resourceUri} for the "
            f"decision.")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=proposal.model_dump(mode="json"),
    )


def json_result(data: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, default=str))],
        structured_content=data,
    )


PROPOSE = types.ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                idempotent_hint=False, open_world_hint=False)
READ = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_server(changes: ChangeService) -> MCPServer:
    """The MCPServer with every tool and resource registered (subscriptions are added later)."""
    mcp: MCPServer = MCPServer(
        "colaflow", title="ColaFlow", version="0.1.0", instructions=INSTRUCTIONS,
        subscriptions=False,
    )

    async def propose(tool: str, arguments: dict[str, Any], expires_in_seconds: float | None
                      ) -> types.CallToolResult:
        principal = require_principal()
        args = {k: v for k, v in arguments.items() if v is not None}
        try:
            change = await changes.propose(principal, tool, args, expires_in_seconds)
        except (InvalidArguments, Forbidden) as exc:
            raise ToolError(str(exc)) from None
        return proposal_result(change)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose creating a new project. Nothing is created until a human "
                    "approves; returns a pendingChangeId to watch.",
    )
    async def create_project(
        key: Annotated[str, Field(description="Unique project key: 2-10 letters/digits "
                                              "starting with a letter, e.g. 'WEB'.")],
        name: Annotated[str, Field(description="Project name, e.g. 'Website'.")],
        description: Annotated[str, Field(description="What the project is about.")] = "",
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("create_project",
                             {"key": key, "name": name, "description": description},
                             expires_in_seconds)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose a new issue in an existing project (see list_projects for keys). "
                    "Nothing is created until a human approves; returns a pendingChangeId.",
    )
    async def create_issue(
        project_key: Annotated[str, Field(description="Key of an existing project, e.g. 'WEB'.")],
        title: Annotated[str, Field(description="One-line issue title (not empty).")],
        description: Annotated[str, Field(description="Details; markdown allowed.")] = "",
        type: Annotated[str | None, _choice(ISSUE_TYPES, "Issue type (default Task).",
                                            True)] = None,
        priority: Annotated[str | None, _choice(PRIORITIES, "Priority (default Medium).",
                                                True)] = None,
        assignee: Annotated[str | None, Field(description="Who should do it, if anyone.")] = None,
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("create_issue", {
            "project_key": project_key, "title": title, "description": description,
            "type": type, "priority": priority, "assignee": assignee,
        }, expires_in_seconds)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose changing an issue's title, description, type, priority or "
                    "assignee (give only the fields to change; use update_status for the "
                    "status). Applied only if a human approves.",
    )
    async def update_issue(
        issue_key: Annotated[str, Field(description="Key of the issue, e.g. 'WEB-12'.")],
        title: Annotated[str | None, Field(description="New title.")] = None,
        description: Annotated[str | None, Field(description="New description.")] = None,
        type: Annotated[str | None, _choice(ISSUE_TYPES, "New issue type.", True)] = None,
        priority: Annotated[str | None, _choice(PRIORITIES, "New priority.", True)] = None,
        assignee: Annotated[str | None, Field(description="New assignee.")] = None,
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("update_issue", {
            "issue_key": issue_key, "title": title, "description": description, "type": type,
            "priority": priority, "assignee": assignee,
        }, expires_in_seconds)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose moving an issue to another status (ToDo, InProgress, InReview, "
                    "Done, Blocked). Applied only if a human approves.",
    )
    async def update_status(
        issue_key: Annotated[str, Field(description="Key of the issue, e.g. 'WEB-12'.")],
        status: Annotated[str, _choice(ISSUE_STATUSES, "The new status.")],
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("update_status", {"issue_key": issue_key, "status": status},
                             expires_in_seconds)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose adding a comment to an issue. Posted only if a human approves.",
    )
    async def add_comment(
        issue_key: Annotated[str, Field(description="Key of the issue, e.g. 'WEB-12'.")],
        body: Annotated[str, Field(description="The comment text (not empty).")],
        author: Annotated[str | None, Field(description="Shown as the comment's author.")
                          ] = None,
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("add_comment",
                             {"issue_key": issue_key, "body": body, "author": author},
                             expires_in_seconds)

    @mcp.tool(
        annotations=PROPOSE,
        description="Propose deleting an issue and its comments. Deleted only if a human "
                    "approves.",
    )
    async def delete_issue(
        issue_key: Annotated[str, Field(description="Key of the issue, e.g. 'WEB-12'.")],
        expires_in_seconds: ExpiresIn = None,
    ) -> Annotated[types.CallToolResult, Proposal]:
        return await propose("delete_issue", {"issue_key": issue_key}, expires_in_seconds)

    # -- read tools ---------------------------------------------------------------------

    @mcp.tool(
        annotations=READ,
        description="Read one of your pending changes: status (Pending, Approved, Rejected, "
                    "Expired), diff, who decided, the rejection reason and, once approved, "
                    "executionResult {success, entityId, error}.",
    )
    async def get_pending_change(
        pending_change_id: Annotated[str, Field(description="The pendingChangeId a change "
                                                            "tool returned.")],
    ) -> types.CallToolResult:
        principal = require_principal()
        try:
            change = await changes.get(principal, pending_change_id)
        except (NotFound, InvalidArguments) as exc:
            raise ToolError(f"pending change {pending_change_id[:64]!r}: {exc}") from None
        return json_result(change_to_json(change))

    @mcp.tool(
        annotations=READ,
        description="List your tenant's pending changes, newest first, optionally by status.",
    )
    async def list_pending_changes(
        status: Annotated[str | None, _choice([s.value for s in Status],
                                              "Only changes with this status.", True)] = None,
        page: Annotated[int, Field(description="Page number, from 1.")] = 1,
        page_size: Annotated[int, Field(description="Items per page, 1-100.")] = 20,
    ) -> types.CallToolResult:
        principal = require_principal()
        try:
            result = await changes.list_changes(principal, status, page, page_size)
        except InvalidArguments as exc:
            raise ToolError(str(exc)) from None
        return json_result({
            "items": [change_to_json(c) for c in result.items], "total": result.total,
            "page": result.page, "pageSize": result.page_size,
        })

    @mcp.tool(annotations=READ,
              description="List the projects of the workspace (key, name, issue count).")
    async def list_projects() -> types.CallToolResult:
        return json_result({"projects": await changes.list_projects(require_principal())})

    @mcp.tool(annotations=READ,
              description="Read an issue by key (e.g. 'WEB-12'), with its comments.")
    async def get_issue(
        issue_key: Annotated[str, Field(description="Issue key, e.g. 'WEB-12'.")],
    ) -> types.CallToolResult:
        try:
            issue = await changes.get_issue(require_principal(), issue_key)
        except (NotFound, InvalidArguments) as exc:
            raise ToolError(str(exc)) from None
        return json_result(issue)

    # -- resources ----------------------------------------------------------------------

    @mcp.resource(
        "colaflow://pending-changes/{change_id}", name="pending-change",
        title="Pending change", mime_type="application/json",
        description="A proposed change as JSON (status, diff, decision, reason, "
                    "executionResult). Subscribe to be notified when it is decided.",
    )
    async def pending_change(change_id: str) -> str:
        try:
            change = await changes.get(require_principal(), change_id)
        except (NotFound, InvalidArguments):
            raise ResourceNotFoundError(
                f"Resource not found: {resource_uri(change_id[:64])}") from None
        return json.dumps(change_to_json(change))

    @mcp.resource(
        "colaflow://issues/{key}", name="issue", title="Issue", mime_type="application/json",
        description="An issue with its comments, as JSON.",
    )
    async def issue(key: str) -> str:
        try:
            data = await changes.get_issue(require_principal(), key)
        except (NotFound, InvalidArguments):
            raise ResourceNotFoundError(f"Resource not found: colaflow://issues/{key[:32]}"
                                        ) from None
        return json.dumps(data)

    async def projects() -> str:
        return json.dumps({"projects": await changes.list_projects(require_principal())})

    mcp.add_resource(FunctionResource.from_function(
        projects, uri="colaflow://projects", name="projects", title="Projects",
        mime_type="application/json", description="The workspace's projects, as JSON.",
    ))
    return mcp
