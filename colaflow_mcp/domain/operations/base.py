"""What every operation is made of: argument models, plans (diffs), lookups, the spec types.

An operation validates its arguments (a pydantic model whose field descriptions are the
ones every surface shows), reads the current entity to build a diff (``before`` /
``after`` / ``changedFields``) and, once approved, executes against the workspace —
failing cleanly with ``ExecutionError`` if the entity changed since the diff.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from colaflow_mcp.domain.errors import ExecutionError, InvalidArguments
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.tables import Comment, Issue, PendingChange, Project

IssueType = Literal["Epic", "Story", "Task", "Bug"]
IssueStatus = Literal["ToDo", "InProgress", "InReview", "Done", "Blocked"]
Priority = Literal["Low", "Medium", "High", "Critical"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Text = Annotated[str, StringConstraints(max_length=50_000)]
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50_000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ISSUE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}-[1-9][0-9]{0,8}$")
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")


class Args(BaseModel):
    """Base of every operation's arguments: unknown fields refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def valid_project_key(v: str) -> str:
    """A project key, upper-cased; ValueError names the rule."""
    v = v.strip().upper()
    if not PROJECT_KEY_RE.match(v):
        raise ValueError("project key must be 2-10 letters/digits starting with a letter, e.g. WEB")
    return v


def valid_issue_key(v: str) -> str:
    """An issue key, upper-cased; ValueError names the rule."""
    v = v.strip().upper()
    if not ISSUE_KEY_RE.match(v):
        raise ValueError("issue key must look like WEB-12")
    return v


@dataclass
class Plan:
    """What a proposal would do: its diff and the id of the entity it touches."""

    entity_id: str | None
    diff: dict[str, Any]
    summary: str


# Planning and execution are synchronous: a plan is made inside the proposal's transaction
# function and an execution inside the decision's (see ``Database.transact``), on a worker
# thread for SQLite or through ``run_sync`` for PostgreSQL: one hop each, not one per
# statement.
Planner = Callable[[Session, str, Any], Plan]
Executor = Callable[[Session, PendingChange], str]
# Several approved changes of one tool and tenant at once, in order, with fewer statements
# than one execution each; the entity ids in order. Used in a transaction shared by several
# decisions, where any failure raises and each is then executed again alone.
ManyExecutor = Callable[[Session, list[PendingChange]], list[str]]


@dataclass(frozen=True)
class Operation:
    """One proposing tool: arguments, plan (diff preview), execution once approved."""

    name: str
    operation: Literal["Create", "Update", "Delete"]
    entity_type: Literal["Project", "Issue", "Comment"]
    args: type[Args]
    plan: Planner
    execute: Executor
    description: str
    mcp: bool = True  # an MCP tool too (every operation is proposable over REST)
    execute_many: ManyExecutor | None = None  # optional: set-wise ``execute``


@dataclass(frozen=True)
class Read:
    """One read tool: its arguments and what it returns (each edge answers it)."""

    name: str
    args: type[Args]
    description: str


# -- snapshots and diffs ----------------------------------------------------------------

def project_snapshot(p: Project) -> dict[str, Any]:
    """A project's fields as a diff shows them."""
    return {"key": p.key, "name": p.name, "description": p.description}


def issue_snapshot(i: Issue, project_key: str | None = None) -> dict[str, Any]:
    """An issue's fields as a diff shows them."""
    return {
        "key": i.key, "projectKey": project_key or i.key.rsplit("-", 1)[0], "title": i.title,
        "description": i.description, "type": i.type, "status": i.status,
        "priority": i.priority, "assignee": i.assignee,
    }


def comment_snapshot(c: Comment, issue_key: str) -> dict[str, Any]:
    """A comment's fields as a diff shows them."""
    return {"id": c.id, "issueKey": issue_key, "author": c.author, "body": c.body}


def make_diff(
    operation: str, entity_type: str, entity_id: str | None, entity_key: str | None,
    before: dict[str, Any] | None, after: dict[str, Any] | None,
) -> dict[str, Any]:
    """The diff preview: ``before``, ``after`` and the ``changedFields`` between them."""
    fields = sorted(set(before or {}) | set(after or {}))
    changed = [
        {"field": f, "oldValue": (before or {}).get(f), "newValue": (after or {}).get(f)}
        for f in fields
        if (before or {}).get(f) != (after or {}).get(f)
    ]
    return {
        "operation": operation, "entityType": entity_type, "entityId": entity_id,
        "entityKey": entity_key, "before": before, "after": after, "changedFields": changed,
    }


def require_same(current: dict[str, Any], before: dict[str, Any] | None, what: str) -> None:
    """ExecutionError unless the entity still looks as the diff saw it."""
    for field, old in (before or {}).items():
        if current.get(field) != old:
            raise ExecutionError(
                f"{what} changed since this change was proposed ({field} is now "
                f"{current.get(field)!r}, was {old!r}); propose it again"
            )


# -- lookups (async ones for queries, sync ones for planners and executors) ---------------

def _project_by_key(tenant_id: str, key: str) -> SelectOfScalar[Project]:
    return select(Project).where(Project.tenant_id == tenant_id, Project.key == key)


def _issue_by_key(tenant_id: str, key: str) -> SelectOfScalar[Issue]:
    return select(Issue).where(Issue.tenant_id == tenant_id, Issue.key == key)


async def find_project(s: AsyncSession, tenant_id: str, key: str) -> Project | None:
    """The tenant's project with this key."""
    return (await s.exec(_project_by_key(tenant_id, key))).first()


async def find_issue(s: AsyncSession, tenant_id: str, key: str) -> Issue | None:
    """The tenant's issue with this key."""
    return (await s.exec(_issue_by_key(tenant_id, key))).first()


def find_project_sync(s: Session, tenant_id: str, key: str) -> Project | None:
    """:func:`find_project` for planners and executors."""
    return s.exec(_project_by_key(tenant_id, key)).first()


def find_issue_sync(s: Session, tenant_id: str, key: str) -> Issue | None:
    """:func:`find_issue` for planners and executors."""
    return s.exec(_issue_by_key(tenant_id, key)).first()


def require_project(s: Session, tenant_id: str, key: str) -> None:
    """InvalidArguments unless the tenant has a project with this key (one indexed,
    prebuilt lookup: proposals of issues only need to know it exists)."""
    found = prepared.run(s.connection(), statements.PROJECT_ID_BY_KEY,
                         {"p_tenant": tenant_id, "p_key": key})
    if not found:
        raise InvalidArguments(f"project {key} does not exist")


def project_or_invalid(s: Session, tenant_id: str, key: str) -> Project:
    """The project, or InvalidArguments saying it does not exist."""
    project = find_project_sync(s, tenant_id, key)
    if project is None:
        raise InvalidArguments(f"project {key} does not exist")
    return project


def issue_or_invalid(s: Session, tenant_id: str, key: str) -> Issue:
    """The issue, or InvalidArguments saying it does not exist."""
    issue = find_issue_sync(s, tenant_id, key)
    if issue is None:
        raise InvalidArguments(f"issue {key} does not exist")
    return issue
