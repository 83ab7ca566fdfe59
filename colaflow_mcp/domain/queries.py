"""Reads, tenant-scoped: pending changes, projects, issues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import InvalidArguments, NotFound
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.domain.operations.base import find_issue, issue_snapshot, project_snapshot
from colaflow_mcp.domain.representation import change_to_json, iso
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import Comment, Issue, PendingChange, Project, Status

MAX_PAGE_SIZE = 100
# Far past any real queue, and keeps OFFSET inside the databases' 64-bit integers.
MAX_PAGE = 1_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Page:
    """One page of changes, newest first."""

    items: list[PendingChange]
    total: int
    page: int
    page_size: int

    def to_json(self) -> dict[str, Any]:
        """``{items, total, page, pageSize}``, each item the change's JSON."""
        return {"items": [change_to_json(c) for c in self.items], "total": self.total,
                "page": self.page, "pageSize": self.page_size}


class Queries:
    """Everything an agent or reviewer may read, always inside the caller's tenant."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_change(self, principal: Principal, change_id: object) -> PendingChange:
        """One change of the caller's tenant; NotFound for a missing or foreign one."""
        cid = parse_change_id(change_id)
        async with self.db.read() as s:
            change = await s.get(PendingChange, cid)
        if change is None or change.tenant_id != principal.tenant_id:
            raise NotFound("pending change not found")
        return change

    async def list_changes(
        self, principal: Principal, status: str | None = None, page: int = 1,
        page_size: int = 20,
    ) -> Page:
        """The tenant's changes, newest first, optionally of one status."""
        if status is not None and status not in {s.value for s in Status}:
            raise InvalidArguments(
                f"status must be one of {', '.join(s.value for s in Status)}")
        if not _is_int(page) or not 1 <= page <= MAX_PAGE:
            raise InvalidArguments(f"page must be an integer between 1 and {MAX_PAGE}")
        if not _is_int(page_size) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArguments(f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
        where = [col(PendingChange.tenant_id) == principal.tenant_id]
        if status is not None:
            where.append(col(PendingChange.status) == status)
        async with self.db.read() as s:
            total = (await s.exec(
                select(func.count()).select_from(PendingChange).where(*where))).one()
            items = (await s.exec(
                select(PendingChange).where(*where)
                .order_by(col(PendingChange.created_at).desc(), col(PendingChange.id))
                .offset((page - 1) * page_size).limit(page_size))).all()
        return Page(list(items), int(total), page, page_size)

    async def list_decided(self, principal: Principal, page: int = 1, page_size: int = 20
                           ) -> Page:
        """The tenant's decided changes (approved, rejected, expired), latest decision
        first: the console's history."""
        if not _is_int(page) or not 1 <= page <= MAX_PAGE:
            raise InvalidArguments(f"page must be an integer between 1 and {MAX_PAGE}")
        if not _is_int(page_size) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArguments(f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
        where = [col(PendingChange.tenant_id) == principal.tenant_id,
                 col(PendingChange.status) != Status.PENDING.value]
        async with self.db.read() as s:
            total = (await s.exec(
                select(func.count()).select_from(PendingChange).where(*where))).one()
            items = (await s.exec(
                select(PendingChange).where(*where)
                .order_by(col(PendingChange.decided_at).desc(), col(PendingChange.id))
                .offset((page - 1) * page_size).limit(page_size))).all()
        return Page(list(items), int(total), page, page_size)

    async def list_projects(self, principal: Principal) -> list[dict[str, Any]]:
        """The tenant's projects with their issue counts."""
        async with self.db.read() as s:
            rows = (await s.exec(select(Project).where(Project.tenant_id == principal.tenant_id)
                                 .order_by(col(Project.key)))).all()
            counts = dict((await s.exec(
                select(Issue.project_id, func.count())
                .where(Issue.tenant_id == principal.tenant_id)
                .group_by(col(Issue.project_id)))).all())
        return [{**project_snapshot(p), "id": p.id, "issueCount": int(counts.get(p.id, 0))}
                for p in rows]

    async def get_issue(self, principal: Principal, key: object) -> dict[str, Any]:
        """An issue of the tenant by key, with its comments."""
        if not isinstance(key, str) or not key.strip():
            raise InvalidArguments("issue key is required, e.g. WEB-12")
        async with self.db.read() as s:
            issue = await find_issue(s, principal.tenant_id, key.strip().upper())
            if issue is None:
                raise NotFound(f"issue {key.strip().upper()[:32]} not found")
            comments = (await s.exec(select(Comment).where(Comment.issue_id == issue.id)
                                     .order_by(col(Comment.created_at)))).all()
        return {
            **issue_snapshot(issue), "id": issue.id,
            "createdAt": iso(issue.created_at), "updatedAt": iso(issue.updated_at),
            "comments": [{"id": c.id, "author": c.author, "body": c.body,
                          "createdAt": iso(c.created_at)} for c in comments],
        }
