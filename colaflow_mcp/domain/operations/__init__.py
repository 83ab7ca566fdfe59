"""The operation table: every tool, declared once.

The MCP tool list (names, descriptions, parameters, enums, output), the tools REST
accepts and the tool tables in docs/mcp.md are all generated from ``OPERATIONS``,
``PROPOSAL_OPTIONS`` and ``READS``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from colaflow_mcp.domain.operations import comments, issues, projects, reads
from colaflow_mcp.domain.operations.base import Args, Operation, Read
from colaflow_mcp.domain.representation import Proposal


def _not_bool(value: object) -> object:
    # Lax float validation reads ``true`` as 1.0: a one-second review window nobody meant.
    if isinstance(value, bool):
        raise ValueError("expires_in_seconds must be a number of seconds, not a boolean")
    return value


class ProposalOptions(Args):
    """Arguments every proposing tool takes besides its own."""

    expires_in_seconds: Annotated[float | None, BeforeValidator(_not_bool)] = Field(
        default=None, gt=0,
        description="Optional: seconds the proposal stays open for review before it expires "
                    "(capped by the server's maximum review window).",
    )
    rationale: str | None = Field(
        default=None, max_length=2000,
        description="Why you want this change, in a sentence or two, for the human "
                    "reviewer: the goal or request it serves and what you checked. Shown "
                    "beside the diff; at most 2000 characters.",
    )


# What every proposing tool returns.
PROPOSAL_OUTPUT = Proposal

OPERATIONS: dict[str, Operation] = {op.name: op for op in [
    Operation("create_project", "Create", "Project", projects.CreateProjectArgs,
              projects.plan_create_project, projects.exec_create_project,
              "Propose creating a new project. Nothing is created until a human approves; "
              "returns a pendingChangeId to watch."),
    Operation("create_issue", "Create", "Issue", issues.CreateIssueArgs,
              issues.plan_create_issue, issues.exec_create_issue,
              "Propose a new issue in an existing project (see list_projects for keys). "
              "Nothing is created until a human approves; returns a pendingChangeId.",
              execute_many=issues.exec_create_issues),
    Operation("update_issue", "Update", "Issue", issues.UpdateIssueArgs,
              issues.plan_update_issue, issues.exec_update_issue,
              "Propose changing an issue's title, description, type, priority or assignee "
              "(give only the fields to change; use update_status for the status). Applied "
              "only if a human approves."),
    Operation("update_status", "Update", "Issue", issues.UpdateStatusArgs,
              issues.plan_update_status, issues.exec_update_issue,
              "Propose moving an issue to another status (ToDo, InProgress, InReview, Done, "
              "Blocked). Applied only if a human approves."),
    Operation("add_comment", "Create", "Comment", comments.AddCommentArgs,
              comments.plan_add_comment, comments.exec_add_comment,
              "Propose adding a comment to an issue. Posted only if a human approves."),
    Operation("delete_issue", "Delete", "Issue", issues.DeleteIssueArgs,
              issues.plan_delete_issue, issues.exec_delete_issue,
              "Propose deleting an issue and its comments. Deleted only if a human approves."),
    # Proposable over REST only (the MCP contract has the six above).
    Operation("update_project", "Update", "Project", projects.UpdateProjectArgs,
              projects.plan_update_project, projects.exec_update_project,
              "Propose renaming or re-describing a project.", mcp=False),
    Operation("delete_project", "Delete", "Project", projects.DeleteProjectArgs,
              projects.plan_delete_project, projects.exec_delete_project,
              "Propose deleting an empty project.", mcp=False),
    Operation("update_comment", "Update", "Comment", comments.UpdateCommentArgs,
              comments.plan_update_comment, comments.exec_update_comment,
              "Propose editing a comment.", mcp=False),
    Operation("delete_comment", "Delete", "Comment", comments.DeleteCommentArgs,
              comments.plan_delete_comment, comments.exec_delete_comment,
              "Propose deleting a comment.", mcp=False),
]}

READS: dict[str, Read] = {r.name: r for r in [
    Read("get_pending_change", reads.GetPendingChangeArgs,
         "Read one of your pending changes: status (Pending, Approved, Rejected, Expired), "
         "diff, who decided, the rejection reason and, once approved, executionResult "
         "{success, entityId, error}."),
    Read("list_pending_changes", reads.ListPendingChangesArgs,
         "List your tenant's pending changes, newest first, optionally by status."),
    Read("list_projects", reads.ListProjectsArgs,
         "List the projects of the workspace (key, name, issue count)."),
    Read("get_issue", reads.GetIssueArgs,
         "Read an issue by key (e.g. 'WEB-12'), with its comments."),
]}


def mcp_operations() -> list[Operation]:
    """The proposing tools MCP offers, in table order."""
    return [op for op in OPERATIONS.values() if op.mcp]


__all__ = ["OPERATIONS", "PROPOSAL_OUTPUT", "READS", "Operation", "ProposalOptions", "Read",
           "mcp_operations"]
