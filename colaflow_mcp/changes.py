"""The pending-change lifecycle: propose, approve (and execute), reject, expire.

Exactly one decision wins: every decision is a conditional UPDATE ``WHERE status =
'Pending'`` and only the caller whose statement changed the row goes on.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from pydantic import ValidationError
from sqlalchemy import Table, bindparam, func
from sqlmodel import Session, col, select

from colaflow_mcp.auth import Principal
from colaflow_mcp.config import Settings
from colaflow_mcp.db import Database
from colaflow_mcp.events import iso
from colaflow_mcp.models import Comment, Issue, PendingChange, Project, Status, utcnow
from colaflow_mcp.notify import Notifier
from colaflow_mcp.workspace import (
    TOOLS,
    ExecutionError,
    InvalidArguments,
    find_issue,
    issue_snapshot,
    project_snapshot,
)

logger = logging.getLogger(__name__)
MAX_PAGE_SIZE = 100
# Far past any real queue, and keeps OFFSET inside the databases' 64-bit integers.
MAX_PAGE = 1_000_000
_PC: Table = PendingChange.__table__  # type: ignore[attr-defined]


def _claim_statement(only_overdue: bool) -> Any:
    """Decide one pending change, in its tenant, before (or, to expire, after) its deadline."""
    c = _PC.c
    now: Any = bindparam("p_now", type_=c.expires_at.type)
    return _PC.update().where(
        c.id == bindparam("p_id"), c.tenant_id == bindparam("p_tenant"),
        c.status == Status.PENDING.value,
        c.expires_at <= now if only_overdue else c.expires_at > now,
    ).values(
        status=bindparam("p_status"), decided_at=now, decided_by=bindparam("p_by"),
        reason=bindparam("p_reason"),
    ).returning(*c)


_CLAIM, _CLAIM_OVERDUE = _claim_statement(False), _claim_statement(True)
_RECORD_RESULT = _PC.update().where(_PC.c.id == bindparam("p_id")).values(
    execution_result=bindparam("p_result", type_=_PC.c.execution_result.type),
    entity_id=bindparam("p_entity"))


class NotFound(LookupError):
    """Missing or in another tenant: the two look the same."""


class Conflict(Exception):
    """The change is no longer pending."""

    def __init__(self, status: str) -> None:
        super().__init__(f"pending change is already {status}")
        self.status = status


class Forbidden(PermissionError):
    """The caller's role may not do this."""


def parse_id(value: object) -> str:
    """A canonical UUID string, or InvalidArguments."""
    if not isinstance(value, str):
        raise InvalidArguments("pending change id must be a UUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise InvalidArguments(
            f"invalid pending change id {value[:64]!r}: must be a UUID") from None


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_seconds(value: object) -> float:
    """A positive, finite number of seconds (``true`` is not 1), or InvalidArguments."""
    message = "expires_in_seconds must be a positive, finite number of seconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArguments(message)
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidArguments(message) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArguments(message)
    return seconds


@dataclass
class Page:
    items: list[PendingChange]
    total: int
    page: int
    page_size: int


class ChangeService:
    """Everything that creates, reads and decides pending changes, tenant-scoped."""

    def __init__(self, db: Database, notifier: Notifier, settings: Settings) -> None:
        self.db = db
        self.notifier = notifier
        self.settings = settings
        self.deadline_changed = anyio.Event()
        self.expiry_planned_at: datetime | None = None  # when the expiry loop wakes next

    # -- proposals ----------------------------------------------------------------------

    async def propose(
        self, principal: Principal, tool_name: str, arguments: dict[str, Any],
        expires_in_seconds: float | None = None,
    ) -> PendingChange:
        """Validate, build the diff and store a pending change; the workspace is untouched."""
        if principal.kind != "agent":
            raise Forbidden("only agents (API keys) propose changes")
        spec = TOOLS.get(tool_name)
        if spec is None:
            raise InvalidArguments(f"unknown tool {tool_name!r}; one of: {', '.join(TOOLS)}")
        if not isinstance(arguments, dict):
            raise InvalidArguments("arguments must be an object")
        try:
            args = spec.args.model_validate(arguments)
        except ValidationError as exc:
            raise InvalidArguments(format_validation_error(exc)) from None
        ttl = self.settings.pending_change_ttl_seconds
        if expires_in_seconds is not None:
            ttl = min(positive_seconds(expires_in_seconds), ttl)
        async with self.db.write() as s:
            plan = await spec.plan(s, principal.tenant_id, args)
            now = utcnow()
            change = PendingChange(
                tenant_id=principal.tenant_id, api_key_id=principal.api_key_id,
                tool_name=spec.name, operation=spec.operation, entity_type=spec.entity_type,
                entity_id=plan.entity_id, arguments=args.model_dump(mode="json"),
                diff=plan.diff, summary=plan.summary[:500], created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
            s.add(change)
        # Wake the expiry loop only if this deadline comes before its planned wake-up
        # (with the default TTL it never does: no extra work per proposal).
        planned = self.expiry_planned_at
        if planned is None or change.expires_at < planned:
            self.deadline_changed.set()
            self.deadline_changed = anyio.Event()
        return change

    # -- reads --------------------------------------------------------------------------

    async def get(self, principal: Principal, change_id: object) -> PendingChange:
        cid = parse_id(change_id)
        async with self.db.read() as s:
            change = await s.get(PendingChange, cid)
        if change is None or change.tenant_id != principal.tenant_id:
            raise NotFound("pending change not found")
        return change

    async def list_changes(
        self, principal: Principal, status: str | None = None, page: int = 1,
        page_size: int = 20,
    ) -> Page:
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

    # -- decisions ----------------------------------------------------------------------

    async def approve(self, principal: Principal, change_id: object) -> PendingChange:
        """Decide Approved and execute in the same transaction; announce after commit."""
        if principal.kind != "reviewer":
            raise Forbidden("only reviewers approve changes")
        cid = parse_id(change_id)
        tenant_id, by = principal.tenant_id, principal.display

        def decide_and_execute(s: Session) -> PendingChange | None:
            change = self._claim(s, tenant_id, cid, Status.APPROVED, by, None)
            if change is not None:
                result = self._execute(s, change)
                change.execution_result = result
                if result["success"]:
                    change.entity_id = result["entityId"]
                s.connection().execute(_RECORD_RESULT, {
                    "p_id": cid, "p_result": result, "p_entity": change.entity_id})
            return change

        change = await self.db.transact(decide_and_execute)
        if change is None:
            await self._lost(principal, cid)
            raise AssertionError("unreachable")
        return await self._after_decision(change)

    async def reject(self, principal: Principal, change_id: object, reason: object
                     ) -> PendingChange:
        """Decide Rejected with a reason."""
        if principal.kind != "reviewer":
            raise Forbidden("only reviewers reject changes")
        cid = parse_id(change_id)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArguments("reason is required")
        if len(reason) > 2000:
            raise InvalidArguments("reason must be at most 2000 characters")
        change = await self._decide(
            principal.tenant_id, cid, Status.REJECTED, principal.display, reason.strip())
        if change is None:
            await self._lost(principal, cid)
            raise AssertionError("unreachable")
        return await self._after_decision(change)

    async def expire_due(self, limit: int = 500) -> list[PendingChange]:
        """Expire every overdue pending change (any tenant); each is announced once."""
        now = utcnow()
        async with self.db.read() as s:
            due = (await s.exec(
                select(PendingChange.id, PendingChange.tenant_id)
                .where(PendingChange.status == Status.PENDING.value)
                .where(col(PendingChange.expires_at) <= now)
                .order_by(col(PendingChange.expires_at)).limit(limit))).all()
        expired = []
        for cid, tenant_id in due:
            change = await self._decide(tenant_id, cid, Status.EXPIRED, None, None,
                                        only_overdue=True)
            if change is not None:
                expired.append(await self._after_decision(change))
        return expired

    async def next_deadline(self) -> datetime | None:
        async with self.db.read() as s:
            return (await s.exec(
                select(func.min(PendingChange.expires_at))
                .where(PendingChange.status == Status.PENDING.value))).one()

    async def _decide(
        self, tenant_id: str, cid: str, status: Status, by: str | None, reason: str | None,
        only_overdue: bool = False,
    ) -> PendingChange | None:
        """Decide in a transaction of its own; the row if this call won, else None."""
        return await self.db.transact(
            lambda s: self._claim(s, tenant_id, cid, status, by, reason, only_overdue))

    @staticmethod
    def _claim(
        s: Session, tenant_id: str, cid: str, status: Status, by: str | None,
        reason: str | None, only_overdue: bool = False,
    ) -> PendingChange | None:
        """The conditional update that lets exactly one decision win; RETURNING the row.

        A prebuilt Core statement (building an ORM or Core statement per call cost more than
        running it); the row comes back as a detached ``PendingChange``.
        """
        stmt = _CLAIM_OVERDUE if only_overdue else _CLAIM
        row = s.connection().execute(stmt, {
            "p_id": cid, "p_tenant": tenant_id, "p_now": utcnow(), "p_status": status.value,
            "p_by": by, "p_reason": reason}).first()
        return None if row is None else PendingChange(**row._asdict())

    async def _lost(self, principal: Principal, cid: str) -> None:
        """Explain why a decision did not apply: NotFound or Conflict (expiring if due)."""
        async with self.db.read() as s:
            change = await s.get(PendingChange, cid)
        if change is None or change.tenant_id != principal.tenant_id:
            raise NotFound("pending change not found")
        if change.status == Status.PENDING.value:
            # Overdue but not yet swept: expire it now, so the answer is final.
            expired = await self._decide(change.tenant_id, cid, Status.EXPIRED, None, None,
                                         only_overdue=True)
            if expired is not None:
                await self._after_decision(expired)
                raise Conflict(Status.EXPIRED.value)
            async with self.db.read() as s:
                change = await s.get(PendingChange, cid)
            assert change is not None
        raise Conflict(change.status)

    @staticmethod
    def _execute(s: Session, change: PendingChange) -> dict[str, Any]:
        """Apply the change inside a savepoint: all of it, or none of it and an error."""
        spec = TOOLS[change.tool_name]
        try:
            with s.begin_nested():
                entity_id = spec.execute(s, change)
        except ExecutionError as exc:
            return {"success": False, "entityId": change.entity_id, "error": str(exc)}
        except Exception as exc:
            logger.exception("execution of %s failed", change.id)
            return {"success": False, "entityId": change.entity_id,
                    "error": f"execution failed: {type(exc).__name__}"}
        return {"success": True, "entityId": entity_id, "error": None}

    async def _after_decision(self, change: PendingChange) -> PendingChange:
        pause = self.settings.pause_after_commit_seconds
        if pause > 0:  # test hook: a window to kill the process between commit and publish
            logger.warning("pausing %.1fs after committing %s (test hook)", pause, change.id)
            await anyio.sleep(pause)
        await self.notifier.announce(change)
        return change

    # -- workspace reads ----------------------------------------------------------------

    async def list_projects(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = (await s.exec(select(Project).where(Project.tenant_id == principal.tenant_id)
                                 .order_by(col(Project.key)))).all()
            counts = dict((await s.exec(
                select(Issue.project_id, func.count())
                .where(Issue.tenant_id == principal.tenant_id)
                .group_by(col(Issue.project_id)))).all())
        return [{**project_snapshot(p), "id": p.id, "issueCount": int(counts.get(p.id, 0))}
                for p in rows]

    async def get_issue(self, principal: Principal, key: str) -> dict[str, Any]:
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

    async def create_project_direct(self, tenant_id: str, key: str, name: str,
                                    description: str = "") -> Project:
        """Create a project without review (CLI bootstrap for operators)."""
        from colaflow_mcp.workspace import CreateProjectArgs, find_project

        try:
            args = CreateProjectArgs(key=key, name=name, description=description)
        except ValidationError as exc:
            raise InvalidArguments(format_validation_error(exc)) from None
        async with self.db.write() as s:
            if await find_project(s, tenant_id, args.key) is not None:
                raise InvalidArguments(f"project {args.key} already exists")
            p = Project(tenant_id=tenant_id, key=args.key, name=args.name,
                        description=args.description)
            s.add(p)
        return p


__all__ = ["ChangeService", "Conflict", "Forbidden", "InvalidArguments", "NotFound", "Page",
           "parse_id"]
