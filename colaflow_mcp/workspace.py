"""The workspace operations an agent may propose: arguments, diff preview, execution.

Each operation is a ``ToolSpec``: it validates arguments, reads the current entity to build
a diff (``before``/``after``/``changedFields``) and, once approved, executes against the
workspace — failing cleanly with ``ExecutionError`` if the entity changed since the diff.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import bindparam
from sqlmodel import Session, col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from colaflow_mcp.models import Comment, Issue, PendingChange, Project, new_id, utcnow

IssueType = Literal["Epic", "Story", "Task", "Bug"]
IssueStatus = Literal["ToDo", "InProgress", "InReview", "Done", "Blocked"]
Priority = Literal["Low", "Medium", "High", "Critical"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Text = Annotated[str, StringConstraints(max_length=50_000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ISSUE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}-[1-9][0-9]{0,8}$")
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")


class InvalidArguments(ValueError):
    """The proposal's arguments are wrong; the message says what to fix."""


class ExecutionError(Exception):
    """An approved change could not be applied; nothing of it was applied."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _project_key(v: str) -> str:
    v = v.strip().upper()
    if not PROJECT_KEY_RE.match(v):
        raise ValueError("project key must be 2-10 letters/digits starting with a letter, e.g. WEB")
    return v


def _issue_key(v: str) -> str:
    v = v.strip().upper()
    if not ISSUE_KEY_RE.match(v):
        raise ValueError("issue key must look like WEB-12")
    return v


class CreateProjectArgs(_Args):
    key: str = Field(description="Short unique project key, 2-10 letters/digits, e.g. 'WEB'.")
    name: Name = Field(description="Project name.")
    description: Text = Field(default="", description="What the project is about.")
    _k = field_validator("key")(_project_key)


class CreateIssueArgs(_Args):
    project_key: str = Field(description="Key of an existing project, e.g. 'WEB'.")
    title: Title = Field(description="One-line issue title.")
    description: Text = Field(default="", description="Details, markdown allowed.")
    type: IssueType = Field(default="Task", description="Epic, Story, Task or Bug.")
    priority: Priority = Field(default="Medium", description="Low, Medium, High or Critical.")
    assignee: Name | None = Field(default=None, description="Who should do it, if anyone.")
    _k = field_validator("project_key")(_project_key)


class UpdateIssueArgs(_Args):
    issue_key: str = Field(description="Key of the issue to change, e.g. 'WEB-12'.")
    title: Title | None = Field(default=None, description="New title.")
    description: Text | None = Field(default=None, description="New description.")
    type: IssueType | None = Field(default=None, description="New type.")
    priority: Priority | None = Field(default=None, description="New priority.")
    assignee: Name | None = Field(default=None, description="New assignee.")
    _k = field_validator("issue_key")(_issue_key)


class UpdateStatusArgs(_Args):
    issue_key: str = Field(description="Key of the issue, e.g. 'WEB-12'.")
    status: IssueStatus = Field(description="ToDo, InProgress, InReview, Done or Blocked.")
    _k = field_validator("issue_key")(_issue_key)


class AddCommentArgs(_Args):
    issue_key: str = Field(description="Key of the issue to comment on, e.g. 'WEB-12'.")
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=50_000)] = Field(
        description="The comment text.")
    author: Name | None = Field(default=None, description="Shown as the comment's author.")
    _k = field_validator("issue_key")(_issue_key)


class DeleteIssueArgs(_Args):
    issue_key: str = Field(description="Key of the issue to delete, e.g. 'WEB-12'.")
    _k = field_validator("issue_key")(_issue_key)


class UpdateProjectArgs(_Args):
    project_key: str = Field(description="Key of the project to change.")
    name: Name | None = None
    description: Text | None = None
    _k = field_validator("project_key")(_project_key)


class DeleteProjectArgs(_Args):
    project_key: str = Field(description="Key of an empty project to delete.")
    _k = field_validator("project_key")(_project_key)


class UpdateCommentArgs(_Args):
    comment_id: str = Field(description="Id of the comment.")
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=50_000)]


class DeleteCommentArgs(_Args):
    comment_id: str = Field(description="Id of the comment.")


@dataclass
class Plan:
    """What a proposal would do: its diff and the id of the entity it touches."""

    entity_id: str | None
    diff: dict[str, Any]
    summary: str


Planner = Callable[[AsyncSession, str, Any], Awaitable[Plan]]
# Execution is synchronous: it runs inside the decision's transaction function (see
# ``Database.transact``), on a worker thread for SQLite or through ``run_sync`` for PostgreSQL.
Executor = Callable[[Session, PendingChange], str]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    operation: Literal["Create", "Update", "Delete"]
    entity_type: Literal["Project", "Issue", "Comment"]
    args: type[_Args]
    plan: Planner
    execute: Executor
    description: str


# -- snapshots and diffs ----------------------------------------------------------------

def project_snapshot(p: Project) -> dict[str, Any]:
    return {"key": p.key, "name": p.name, "description": p.description}


def issue_snapshot(i: Issue, project_key: str | None = None) -> dict[str, Any]:
    return {
        "key": i.key, "projectKey": project_key or i.key.rsplit("-", 1)[0], "title": i.title,
        "description": i.description, "type": i.type, "status": i.status,
        "priority": i.priority, "assignee": i.assignee,
    }


def comment_snapshot(c: Comment, issue_key: str) -> dict[str, Any]:
    return {"id": c.id, "issueKey": issue_key, "author": c.author, "body": c.body}


def make_diff(
    operation: str, entity_type: str, entity_id: str | None, entity_key: str | None,
    before: dict[str, Any] | None, after: dict[str, Any] | None,
) -> dict[str, Any]:
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


# -- lookups --------------------------------------------------------------------------

def _project_by_key(tenant_id: str, key: str) -> SelectOfScalar[Project]:
    return select(Project).where(Project.tenant_id == tenant_id, Project.key == key)


def _issue_by_key(tenant_id: str, key: str) -> SelectOfScalar[Issue]:
    return select(Issue).where(Issue.tenant_id == tenant_id, Issue.key == key)


async def find_project(s: AsyncSession, tenant_id: str, key: str) -> Project | None:
    return (await s.exec(_project_by_key(tenant_id, key))).first()


async def find_issue(s: AsyncSession, tenant_id: str, key: str) -> Issue | None:
    return (await s.exec(_issue_by_key(tenant_id, key))).first()


# The executors run synchronously (see ``Executor``).

def _find_project_sync(s: Session, tenant_id: str, key: str) -> Project | None:
    return s.exec(_project_by_key(tenant_id, key)).first()


def _find_issue_sync(s: Session, tenant_id: str, key: str) -> Issue | None:
    return s.exec(_issue_by_key(tenant_id, key)).first()


async def _issue_or_invalid(s: AsyncSession, tenant_id: str, key: str) -> Issue:
    issue = await find_issue(s, tenant_id, key)
    if issue is None:
        raise InvalidArguments(f"issue {key} does not exist")
    return issue


async def _project_or_invalid(s: AsyncSession, tenant_id: str, key: str) -> Project:
    project = await find_project(s, tenant_id, key)
    if project is None:
        raise InvalidArguments(f"project {key} does not exist")
    return project


def _require_same(current: dict[str, Any], before: dict[str, Any] | None, what: str) -> None:
    for field, old in (before or {}).items():
        if current.get(field) != old:
            raise ExecutionError(
                f"{what} changed since this change was proposed ({field} is now "
                f"{current.get(field)!r}, was {old!r}); propose it again"
            )


# -- projects -------------------------------------------------------------------------

async def plan_create_project(s: AsyncSession, tenant_id: str, a: CreateProjectArgs) -> Plan:
    if await find_project(s, tenant_id, a.key) is not None:
        raise InvalidArguments(f"project {a.key} already exists")
    after = {"key": a.key, "name": a.name, "description": a.description}
    return Plan(None, make_diff("Create", "Project", None, a.key, None, after),
                f"Create project {a.key} '{a.name}'")


def exec_create_project(s: Session, ch: PendingChange) -> str:
    after = ch.diff["after"]
    if _find_project_sync(s, ch.tenant_id, after["key"]) is not None:
        raise ExecutionError(f"project {after['key']} already exists")
    p = Project(tenant_id=ch.tenant_id, key=after["key"], name=after["name"],
                description=after["description"])
    s.add(p)
    s.flush()
    return p.id


async def plan_update_project(s: AsyncSession, tenant_id: str, a: UpdateProjectArgs) -> Plan:
    p = await _project_or_invalid(s, tenant_id, a.project_key)
    before = project_snapshot(p)
    changes = a.model_dump(exclude={"project_key"}, exclude_none=True)
    if not changes:
        raise InvalidArguments("nothing to change: give name and/or description")
    after = {**before, **changes}
    return Plan(p.id, make_diff("Update", "Project", p.id, p.key, before, after),
                f"Update project {p.key}: {', '.join(sorted(changes))}")


def exec_update_project(s: Session, ch: PendingChange) -> str:
    p = s.get(Project, ch.entity_id)
    if p is None or p.tenant_id != ch.tenant_id:
        raise ExecutionError(f"project {ch.diff['entityKey']} no longer exists")
    _require_same(project_snapshot(p), ch.diff["before"], f"project {p.key}")
    p.name, p.description = ch.diff["after"]["name"], ch.diff["after"]["description"]
    p.updated_at = utcnow()
    s.add(p)
    return p.id


async def plan_delete_project(s: AsyncSession, tenant_id: str, a: DeleteProjectArgs) -> Plan:
    p = await _project_or_invalid(s, tenant_id, a.project_key)
    if (await s.exec(select(Issue.id).where(Issue.project_id == p.id).limit(1))).first():
        raise InvalidArguments(f"project {p.key} still has issues; delete them first")
    before = project_snapshot(p)
    return Plan(p.id, make_diff("Delete", "Project", p.id, p.key, before, None),
                f"Delete project {p.key}")


def exec_delete_project(s: Session, ch: PendingChange) -> str:
    p = s.get(Project, ch.entity_id)
    if p is None or p.tenant_id != ch.tenant_id:
        raise ExecutionError(f"project {ch.diff['entityKey']} no longer exists")
    _require_same(project_snapshot(p), ch.diff["before"], f"project {p.key}")
    if (s.exec(select(Issue.id).where(Issue.project_id == p.id).limit(1))).first():
        raise ExecutionError(f"project {p.key} has issues now; it can no longer be deleted")
    s.delete(p)
    return p.id


# -- issues ---------------------------------------------------------------------------

async def plan_create_issue(s: AsyncSession, tenant_id: str, a: CreateIssueArgs) -> Plan:
    await _project_or_invalid(s, tenant_id, a.project_key)
    after = {
        "key": None, "projectKey": a.project_key, "title": a.title,
        "description": a.description, "type": a.type, "status": "ToDo",
        "priority": a.priority, "assignee": a.assignee,
    }
    return Plan(None, make_diff("Create", "Issue", None, None, None, after),
                f"Create {a.type.lower()} in {a.project_key}: '{a.title}'")


def _take_issue_number_statement() -> Any:
    # A prebuilt Core statement: building one per call costs more than running it.
    c = Project.__table__.c  # type: ignore[attr-defined]
    return (Project.__table__.update()  # type: ignore[attr-defined]
            .where(c.tenant_id == bindparam("p_tenant"), c.key == bindparam("p_key"))
            .values(next_issue_number=c.next_issue_number + 1)
            .returning(c.id, c.key, c.next_issue_number))


_TAKE_ISSUE_NUMBER = _take_issue_number_statement()
_INSERT_ISSUE = Issue.__table__.insert()  # type: ignore[attr-defined]


def exec_create_issue(s: Session, ch: PendingChange) -> str:
    after = ch.diff["after"]
    # One statement takes the project's row lock and the next number, so concurrent
    # creates number issues uniquely.
    taken = s.connection().execute(_TAKE_ISSUE_NUMBER, {
        "p_tenant": ch.tenant_id, "p_key": after["projectKey"]}).first()
    if taken is None:
        raise ExecutionError(f"project {after['projectKey']} no longer exists")
    project_id, project_key, next_number = taken
    number = next_number - 1
    issue_id, now = new_id(), utcnow()
    s.connection().execute(_INSERT_ISSUE, {
        "id": issue_id, "tenant_id": ch.tenant_id, "project_id": project_id,
        "key": f"{project_key}-{number}", "number": number, "title": after["title"],
        "description": after["description"], "type": after["type"],
        "status": after["status"], "priority": after["priority"],
        "assignee": after["assignee"], "created_at": now, "updated_at": now,
    })
    return issue_id


async def plan_update_issue(s: AsyncSession, tenant_id: str, a: UpdateIssueArgs) -> Plan:
    issue = await _issue_or_invalid(s, tenant_id, a.issue_key)
    before = issue_snapshot(issue)
    changes = a.model_dump(exclude={"issue_key"}, exclude_none=True)
    if not changes:
        raise InvalidArguments(
            "nothing to change: give at least one of title, description, type, priority, "
            "assignee (use update_status for the status)")
    after = {**before, **changes}
    diff = make_diff("Update", "Issue", issue.id, issue.key, before, after)
    if not diff["changedFields"]:
        raise InvalidArguments(f"issue {issue.key} already has these values")
    fields = ", ".join(c["field"] for c in diff["changedFields"])
    return Plan(issue.id, diff, f"Update {issue.key}: {fields}")


async def plan_update_status(s: AsyncSession, tenant_id: str, a: UpdateStatusArgs) -> Plan:
    issue = await _issue_or_invalid(s, tenant_id, a.issue_key)
    if issue.status == a.status:
        raise InvalidArguments(f"issue {issue.key} is already {a.status}")
    before = issue_snapshot(issue)
    after = {**before, "status": a.status}
    return Plan(issue.id, make_diff("Update", "Issue", issue.id, issue.key, before, after),
                f"Move {issue.key} from {issue.status} to {a.status}")


def _current_issue(s: Session, ch: PendingChange) -> Issue:
    issue = s.get(Issue, ch.entity_id)
    if issue is None or issue.tenant_id != ch.tenant_id:
        raise ExecutionError(f"issue {ch.diff['entityKey']} no longer exists")
    _require_same(issue_snapshot(issue), ch.diff["before"], f"issue {issue.key}")
    return issue


def exec_update_issue(s: Session, ch: PendingChange) -> str:
    issue = _current_issue(s, ch)
    for c in ch.diff["changedFields"]:
        setattr(issue, c["field"], c["newValue"])
    issue.updated_at = utcnow()
    s.add(issue)
    return issue.id


async def plan_delete_issue(s: AsyncSession, tenant_id: str, a: DeleteIssueArgs) -> Plan:
    issue = await _issue_or_invalid(s, tenant_id, a.issue_key)
    before = issue_snapshot(issue)
    return Plan(issue.id, make_diff("Delete", "Issue", issue.id, issue.key, before, None),
                f"Delete {issue.key} '{issue.title}'")


def exec_delete_issue(s: Session, ch: PendingChange) -> str:
    issue = _current_issue(s, ch)
    s.exec(delete(Comment).where(col(Comment.issue_id) == issue.id))
    s.delete(issue)
    return issue.id


# -- comments -------------------------------------------------------------------------

async def plan_add_comment(s: AsyncSession, tenant_id: str, a: AddCommentArgs) -> Plan:
    issue = await _issue_or_invalid(s, tenant_id, a.issue_key)
    after = {"id": None, "issueKey": issue.key, "author": a.author or "agent", "body": a.body}
    short = a.body if len(a.body) <= 60 else a.body[:57] + "..."
    return Plan(None, make_diff("Create", "Comment", None, None, None, after),
                f"Comment on {issue.key}: '{short}'")


def exec_add_comment(s: Session, ch: PendingChange) -> str:
    after = ch.diff["after"]
    issue = _find_issue_sync(s, ch.tenant_id, after["issueKey"])
    if issue is None:
        raise ExecutionError(f"issue {after['issueKey']} no longer exists")
    c = Comment(tenant_id=ch.tenant_id, issue_id=issue.id, author=after["author"],
                body=after["body"])
    s.add(c)
    s.flush()
    return c.id


async def _comment_or_invalid(s: AsyncSession, tenant_id: str, cid: str) -> tuple[Comment, str]:
    c = await s.get(Comment, cid)
    if c is None or c.tenant_id != tenant_id:
        raise InvalidArguments(f"comment {cid} does not exist")
    issue = await s.get(Issue, c.issue_id)
    return c, issue.key if issue else "?"


async def plan_update_comment(s: AsyncSession, tenant_id: str, a: UpdateCommentArgs) -> Plan:
    c, issue_key = await _comment_or_invalid(s, tenant_id, a.comment_id)
    before = comment_snapshot(c, issue_key)
    after = {**before, "body": a.body}
    return Plan(c.id, make_diff("Update", "Comment", c.id, None, before, after),
                f"Edit comment on {issue_key}")


def _current_comment(s: Session, ch: PendingChange) -> Comment:
    c = s.get(Comment, ch.entity_id)
    if c is None or c.tenant_id != ch.tenant_id:
        raise ExecutionError("the comment no longer exists")
    before = ch.diff["before"] or {}
    _require_same(comment_snapshot(c, before.get("issueKey", "")), before, "the comment")
    return c


def exec_update_comment(s: Session, ch: PendingChange) -> str:
    c = _current_comment(s, ch)
    c.body = ch.diff["after"]["body"]
    c.updated_at = utcnow()
    s.add(c)
    return c.id


async def plan_delete_comment(s: AsyncSession, tenant_id: str, a: DeleteCommentArgs) -> Plan:
    c, issue_key = await _comment_or_invalid(s, tenant_id, a.comment_id)
    before = comment_snapshot(c, issue_key)
    return Plan(c.id, make_diff("Delete", "Comment", c.id, None, before, None),
                f"Delete comment on {issue_key}")


def exec_delete_comment(s: Session, ch: PendingChange) -> str:
    c = _current_comment(s, ch)
    s.delete(c)
    return c.id


TOOLS: dict[str, ToolSpec] = {
    t.name: t
    for t in [
        ToolSpec("create_project", "Create", "Project", CreateProjectArgs, plan_create_project,
                 exec_create_project, "Propose a new project."),
        ToolSpec("create_issue", "Create", "Issue", CreateIssueArgs, plan_create_issue,
                 exec_create_issue, "Propose a new issue in an existing project."),
        ToolSpec("update_issue", "Update", "Issue", UpdateIssueArgs, plan_update_issue,
                 exec_update_issue, "Propose changes to an issue's fields (not its status)."),
        ToolSpec("update_status", "Update", "Issue", UpdateStatusArgs, plan_update_status,
                 exec_update_issue, "Propose moving an issue to another status."),
        ToolSpec("add_comment", "Create", "Comment", AddCommentArgs, plan_add_comment,
                 exec_add_comment, "Propose a comment on an issue."),
        ToolSpec("delete_issue", "Delete", "Issue", DeleteIssueArgs, plan_delete_issue,
                 exec_delete_issue, "Propose deleting an issue and its comments."),
        ToolSpec("update_project", "Update", "Project", UpdateProjectArgs, plan_update_project,
                 exec_update_project, "Propose renaming or re-describing a project."),
        ToolSpec("delete_project", "Delete", "Project", DeleteProjectArgs, plan_delete_project,
                 exec_delete_project, "Propose deleting an empty project."),
        ToolSpec("update_comment", "Update", "Comment", UpdateCommentArgs, plan_update_comment,
                 exec_update_comment, "Propose editing a comment."),
        ToolSpec("delete_comment", "Delete", "Comment", DeleteCommentArgs, plan_delete_comment,
                 exec_delete_comment, "Propose deleting a comment."),
    ]
}
# The six tools the MCP contract exposes; the rest are proposable over REST.
MCP_TOOLS = ("create_project", "create_issue", "update_issue", "update_status", "add_comment",
             "delete_issue")
