"""Comment operations: add, edit, delete."""

from __future__ import annotations

from pydantic import Field, field_validator
from sqlmodel import Session

from colaflow_mcp.domain.errors import ExecutionError, InvalidArguments
from colaflow_mcp.domain.operations.base import (
    Args,
    Body,
    Name,
    Plan,
    comment_snapshot,
    find_issue_sync,
    issue_or_invalid,
    make_diff,
    require_same,
    valid_issue_key,
)
from colaflow_mcp.store.tables import Comment, Issue, PendingChange, utcnow


class AddCommentArgs(Args):
    issue_key: str = Field(description="Key of the issue, e.g. 'WEB-12'.")
    body: Body = Field(description="The comment text (not empty).")
    author: Name | None = Field(default=None, description="Shown as the comment's author.")
    _k = field_validator("issue_key")(valid_issue_key)


class UpdateCommentArgs(Args):
    comment_id: str = Field(description="Id of the comment.")
    body: Body = Field(description="The new comment text (not empty).")


class DeleteCommentArgs(Args):
    comment_id: str = Field(description="Id of the comment.")


def plan_add_comment(s: Session, tenant_id: str, a: AddCommentArgs) -> Plan:
    """The diff shows the new comment on an existing issue."""
    issue = issue_or_invalid(s, tenant_id, a.issue_key)
    after = {"id": None, "issueKey": issue.key, "author": a.author or "agent", "body": a.body}
    short = a.body if len(a.body) <= 60 else a.body[:57] + "..."
    return Plan(None, make_diff("Create", "Comment", None, None, None, after),
                f"Comment on {issue.key}: '{short}'")


def exec_add_comment(s: Session, ch: PendingChange) -> str:
    """Add the comment, if its issue still exists."""
    after = ch.diff["after"]
    issue = find_issue_sync(s, ch.tenant_id, after["issueKey"])
    if issue is None:
        raise ExecutionError(f"issue {after['issueKey']} no longer exists")
    c = Comment(tenant_id=ch.tenant_id, issue_id=issue.id, author=after["author"],
                body=after["body"])
    s.add(c)
    s.flush()
    return c.id


def _comment_or_invalid(s: Session, tenant_id: str, cid: str) -> tuple[Comment, str]:
    c = s.get(Comment, cid)
    if c is None or c.tenant_id != tenant_id:
        raise InvalidArguments(f"comment {cid} does not exist")
    issue = s.get(Issue, c.issue_id)
    return c, issue.key if issue else "?"


def plan_update_comment(s: Session, tenant_id: str, a: UpdateCommentArgs) -> Plan:
    """The diff of the comment's new text."""
    c, key = _comment_or_invalid(s, tenant_id, a.comment_id)
    before = comment_snapshot(c, key)
    after = {**before, "body": a.body}
    return Plan(c.id, make_diff("Update", "Comment", c.id, None, before, after),
                f"Edit comment on {key}")


def _current_comment(s: Session, ch: PendingChange) -> Comment:
    c = s.get(Comment, ch.entity_id)
    if c is None or c.tenant_id != ch.tenant_id:
        raise ExecutionError("the comment no longer exists")
    before = ch.diff["before"] or {}
    require_same(comment_snapshot(c, before.get("issueKey", "")), before, "the comment")
    return c


def exec_update_comment(s: Session, ch: PendingChange) -> str:
    """Replace the text, if the comment is unchanged."""
    c = _current_comment(s, ch)
    c.body = ch.diff["after"]["body"]
    c.updated_at = utcnow()
    s.add(c)
    return c.id


def plan_delete_comment(s: Session, tenant_id: str, a: DeleteCommentArgs) -> Plan:
    """The diff shows the comment going."""
    c, key = _comment_or_invalid(s, tenant_id, a.comment_id)
    before = comment_snapshot(c, key)
    return Plan(c.id, make_diff("Delete", "Comment", c.id, None, before, None),
                f"Delete comment on {key}")


def exec_delete_comment(s: Session, ch: PendingChange) -> str:
    """Delete the comment, if it is unchanged."""
    c = _current_comment(s, ch)
    s.delete(c)
    return c.id
