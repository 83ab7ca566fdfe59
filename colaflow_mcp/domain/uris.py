"""The MCP resource URIs of the workspace: built and parsed here, and nowhere else."""

from __future__ import annotations

from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.ids import parse_change_id

SCHEME = "colaflow://"
PENDING_CHANGE_PREFIX = SCHEME + "pending-changes/"
PENDING_CHANGE_TEMPLATE = PENDING_CHANGE_PREFIX + "{change_id}"
PROJECTS_URI = SCHEME + "projects"
ISSUE_TEMPLATE = SCHEME + "issues/{key}"


def pending_change_uri(change_id: str) -> str:
    """``colaflow://pending-changes/{id}``: the resource an agent subscribes to."""
    return PENDING_CHANGE_PREFIX + change_id


def issue_uri(key: str) -> str:
    """``colaflow://issues/{key}``."""
    return ISSUE_TEMPLATE.format(key=key)


def change_id_of(uri: str) -> str | None:
    """The canonical change id in a pending-change URI; None for any other URI."""
    if not uri.startswith(PENDING_CHANGE_PREFIX):
        return None
    try:
        return parse_change_id(uri[len(PENDING_CHANGE_PREFIX):])
    except InvalidArguments:
        return None


def is_other_colaflow_uri(uri: str) -> bool:
    """One of ours, but not a pending change (those cannot be subscribed)."""
    return uri.startswith(SCHEME) and not uri.startswith(PENDING_CHANGE_PREFIX)
