"""Issue operations: create, update fields, move status, delete (with its comments)."""

from __future__ import annotations

from pydantic import Field, field_validator
from sqlmodel import Session, col, delete

from colaflow_mcp.domain.errors import ExecutionError, InvalidArguments
from colaflow_mcp.domain.operations.base import (
    Args,
    IssueStatus,
    IssueType,
    Name,
    Plan,
    Priority,
    Text,
    Title,
    issue_or_invalid,
    issue_snapshot,
    make_diff,
    require_project,
    require_same,
    valid_issue_key,
    valid_project_key,
)
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import Comment, Issue, PendingChange, new_id, utcnow


class CreateIssueArgs(Args):
    project_key: str = Field(description="Key of an existing project, e.g. 'WEB'.")
    title: Title = Field(description="One-line issue title (not empty).")
    description: Text = Field(default="", description="Details; markdown allowed.")
    type: IssueType = Field(default="Task", description="Issue type (default Task).")
    priority: Priority = Field(default="Medium", description="Priority (default Medium).")
    assignee: Name | None = Field(default=None, description="Who should do it, if anyone.")
    _k = field_validator("project_key")(valid_project_key)


class UpdateIssueArgs(Args):
    issue_key: str = Field(description="Key of the issue, e.g. 'WEB-12'.")
    title: Title | None = Field(default=None, description="New title.")
    description: Text | None = Field(default=None, description="New description.")
    type: IssueType | None = Field(default=None, description="New issue type.")
    priority: Priority | None = Field(default=None, description="New priority.")
    assignee: Name | None = Field(default=None, description="New assignee.")
    _k = field_validator("issue_key")(valid_issue_key)


class UpdateStatusArgs(Args):
    issue_key: str = Field(description="Key of the issue, e.g. 'WEB-12'.")
    status: IssueStatus = Field(description="The new status.")
    _k = field_validator("issue_key")(valid_issue_key)


class DeleteIssueArgs(Args):
    issue_key: str = Field(description="Key of the issue, e.g. 'WEB-12'.")
    _k = field_validator("issue_key")(valid_issue_key)


def plan_create_issue(s: Session, tenant_id: str, a: CreateIssueArgs) -> Plan:
    """The diff shows the new issue (its key is taken at execution)."""
    require_project(s, tenant_id, a.project_key)
    after = {
        "key": None, "projectKey": a.project_key, "title": a.title,
        "description": a.description, "type": a.type, "status": "ToDo",
        "priority": a.priority, "assignee": a.assignee,
    }
    return Plan(None, make_diff("Create", "Issue", None, None, None, after),
                f"Create {a.type.lower()} in {a.project_key}: '{a.title}'")


def exec_create_issue(s: Session, ch: PendingChange) -> str:
    """Take the project's next number and insert the issue."""
    return exec_create_issues(s, [ch])[0]


def exec_create_issues(s: Session, changes: list[PendingChange]) -> list[str]:
    """Create issues in order: per project, its numbers taken at once and the issues
    inserted with one statement on PostgreSQL (atomic by itself), two on SQLite."""
    conn = s.connection()
    fast = native(conn)
    now, ids = utcnow(), [new_id() for _ in changes]
    by_project: dict[str, list[int]] = {}
    for i, ch in enumerate(changes):
        by_project.setdefault(ch.diff["after"]["projectKey"], []).append(i)
    for project_key, members in by_project.items():
        tenant_id = changes[members[0]].tenant_id
        afters = [changes[i].diff["after"] for i in members]
        if fast is not None:
            made = fast.fetch(statements.NATIVE_CREATE_ISSUES, tenant_id, project_key,
                              len(members), now, [ids[i] for i in members],
                              *([a[f] for a in afters] for f in _ISSUE_FIELDS))
            if len(made) != len(members):
                raise ExecutionError(f"project {project_key} no longer exists")
            continue
        # On SQLite's own cursor (``prepared``): cheaper than ``Connection.execute``.
        taken = prepared.run(conn, statements.TAKE_ISSUE_NUMBERS, {
            "p_tenant": tenant_id, "p_key": project_key, "p_count": len(members)})
        if not taken:
            raise ExecutionError(f"project {project_key} no longer exists")
        project_id, key, next_number = taken[0]
        first = next_number - len(members)
        prepared.run(conn, statements.INSERT_ISSUE, [{
            "id": ids[i], "tenant_id": tenant_id, **{f: a[f] for f in _ISSUE_FIELDS},
            "created_at": now, "updated_at": now, "project_id": project_id,
            "key": f"{key}-{first + n}", "number": first + n}
            for n, (i, a) in enumerate(zip(members, afters, strict=True))])
    return ids


# A new issue's fields as its diff's ``after`` has them (NATIVE_CREATE_ISSUES's order).
_ISSUE_FIELDS = ("title", "description", "type", "status", "priority", "assignee")


def plan_update_issue(s: Session, tenant_id: str, a: UpdateIssueArgs) -> Plan:
    """The diff of the given fields; refuses a change that changes nothing."""
    issue = issue_or_invalid(s, tenant_id, a.issue_key)
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


def plan_update_status(s: Session, tenant_id: str, a: UpdateStatusArgs) -> Plan:
    """The diff of the new status; refuses the status it already has."""
    issue = issue_or_invalid(s, tenant_id, a.issue_key)
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
    require_same(issue_snapshot(issue), ch.diff["before"], f"issue {issue.key}")
    return issue


def exec_update_issue(s: Session, ch: PendingChange) -> str:
    """Apply the changed fields (status included), if the issue is unchanged."""
    issue = _current_issue(s, ch)
    for c in ch.diff["changedFields"]:
        setattr(issue, c["field"], c["newValue"])
    issue.updated_at = utcnow()
    s.add(issue)
    return issue.id


def plan_delete_issue(s: Session, tenant_id: str, a: DeleteIssueArgs) -> Plan:
    """The diff shows the issue going."""
    issue = issue_or_invalid(s, tenant_id, a.issue_key)
    before = issue_snapshot(issue)
    return Plan(issue.id, make_diff("Delete", "Issue", issue.id, issue.key, before, None),
                f"Delete {issue.key} '{issue.title}'")


def exec_delete_issue(s: Session, ch: PendingChange) -> str:
    """Delete the issue and its comments, if the issue is unchanged."""
    issue = _current_issue(s, ch)
    s.exec(delete(Comment).where(col(Comment.issue_id) == issue.id))
    s.delete(issue)
    return issue.id
