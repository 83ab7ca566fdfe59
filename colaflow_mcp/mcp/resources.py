"""The MCP resources: one per pending change (subscribable), the projects, each issue."""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resources import FunctionResource

from colaflow_mcp.domain.errors import InvalidArguments, NotFound
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.domain.uris import (
    ISSUE_TEMPLATE,
    PENDING_CHANGE_TEMPLATE,
    PROJECTS_URI,
    issue_uri,
    pending_change_uri,
)
from colaflow_mcp.mcp.context import require_principal


def register_resources(server: MCPServer, queries: Queries) -> None:
    """Add the resources, all scoped to the caller's tenant (a foreign one is not found)."""

    @server.resource(
        PENDING_CHANGE_TEMPLATE, name="pending-change",
        title="Pending change", mime_type="application/json",
        description="A proposed change as JSON (status, diff, decision, reason, "
                    "executionResult). Subscribe to be notified when it is decided.",
    )
    async def pending_change(change_id: str) -> str:
        try:
            change = await queries.get_change(require_principal(), change_id)
        except (NotFound, InvalidArguments):
            raise ResourceNotFoundError(
                f"Resource not found: {pending_change_uri(change_id[:64])}") from None
        return json.dumps(change_to_json(change))

    @server.resource(
        ISSUE_TEMPLATE, name="issue", title="Issue", mime_type="application/json",
        description="An issue with its comments, as JSON.",
    )
    async def issue(key: str) -> str:
        try:
            data = await queries.get_issue(require_principal(), key)
        except (NotFound, InvalidArguments):
            raise ResourceNotFoundError(f"Resource not found: {issue_uri(key[:32])}") from None
        return json.dumps(data)

    async def projects() -> str:
        return json.dumps({"projects": await queries.list_projects(require_principal())})

    server.add_resource(FunctionResource.from_function(
        projects, uri=PROJECTS_URI, name="projects", title="Projects",
        mime_type="application/json", description="The workspace's projects, as JSON.",
    ))
