"""Tables: tenants, API keys, the workspace (projects, issues, comments), pending changes,
the audit trail, webhooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Text, UniqueConstraint, false
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now (sqlmodel stores UTC and returns aware UTC on every engine)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new random id (UUID4 text)."""
    return str(uuid.uuid4())


class Status(StrEnum):
    """A pending change's status; every status but Pending is final."""

    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


TERMINAL = (Status.APPROVED, Status.REJECTED, Status.EXPIRED)


class Meta(SQLModel, table=True):
    """Key/value facts kept with the database (generated JWT secret, schema version)."""

    __tablename__ = "cola_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    slug: str = Field(unique=True, index=True, max_length=64)
    name: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)
    name: str = Field(default="", max_length=200)
    prefix: str = Field(unique=True, index=True, max_length=32)
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class Project(SQLModel, table=True):
    __tablename__ = "project"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)
    key: str = Field(max_length=10)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=10_000)
    next_issue_number: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Issue(SQLModel, table=True):
    __tablename__ = "issue"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=36)
    key: str = Field(max_length=24)
    number: int
    title: str = Field(max_length=500)
    description: str = Field(default="", max_length=50_000)
    type: str = Field(default="Task", max_length=20)
    status: str = Field(default="ToDo", max_length=20)
    priority: str = Field(default="Medium", max_length=20)
    assignee: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Comment(SQLModel, table=True):
    __tablename__ = "comment"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=36)
    issue_id: str = Field(foreign_key="issue.id", index=True, max_length=36)
    author: str = Field(default="", max_length=200)
    body: str = Field(max_length=50_000)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PendingChange(SQLModel, table=True):
    """A proposed change. Its status row is the truth every notification derives from."""

    __tablename__ = "pending_change"
    __table_args__ = (
        Index("ix_pending_change_status_expires", "status", "expires_at"),
        Index("ix_pending_change_unannounced", "announced_at", "decided_at"),
        Index("ix_pending_change_tenant_created", "tenant_id", "created_at"),
    )
    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=36)
    api_key_id: str | None = Field(default=None, max_length=36)
    # The proposer key's name when it proposed (keys may be renamed or deleted later).
    api_key_name: str | None = Field(default=None, max_length=200)
    tool_name: str = Field(max_length=64)
    operation: str = Field(max_length=16)
    entity_type: str = Field(max_length=16)
    entity_id: str | None = Field(default=None, max_length=36)
    # What is (or was) applied: the agent's arguments, or the reviewer's edit of them.
    arguments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # What the agent sent, never changed.
    proposed_arguments: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False))
    rationale: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    edited: bool = Field(default=False, sa_column=Column(
        Boolean, nullable=False, server_default=false()))
    edited_by: str | None = Field(default=None, max_length=200)
    diff: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    summary: str = Field(default="", max_length=500)
    status: str = Field(default=Status.PENDING.value, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    execution_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Set once the decision has been published on the backplane; the sweep re-announces
    # decisions whose commit happened but whose publication did not.
    announced_at: datetime | None = None


# Per column of ``PendingChange`` not given to :func:`new_pending_change`: its default, or
# its default factory (called per change).
_PC_DEFAULTS = tuple(
    (name, field.default_factory, None if field.default_factory else field.default)
    for name, field in PendingChange.model_fields.items() if not field.is_required())
_PC_MANAGER = manager_of_class(PendingChange)
_PC_REQUIRED = frozenset(name for name, field in PendingChange.model_fields.items()
                         if field.is_required())


def new_pending_change(**values: Any) -> PendingChange:
    """A new ``PendingChange`` made the way the ORM makes a row it loads: the instance
    without per-attribute events, its columns written into it directly, every column not
    given set to its default. The same object ``PendingChange(**values)`` makes (a table
    model validates nothing either), for about a tenth of its CPU: what a proposal builds and
    inserts with a prebuilt statement (``statements.pending_change_row``), never added to
    a session."""
    missing = _PC_REQUIRED - values.keys()
    if missing:
        raise TypeError(f"missing columns: {', '.join(sorted(missing))}")
    unknown = values.keys() - PendingChange.model_fields.keys()
    if unknown:
        raise TypeError(f"unknown columns: {', '.join(sorted(unknown))}")
    if not _PC_MANAGER.mapper.configured:
        # The constructor configures the mappers on first use; this path must too (its
        # attributes cannot be read before).
        configure_mappers()
    change: PendingChange = _PC_MANAGER.new_instance()
    given = set(values)
    for name, factory, default in _PC_DEFAULTS:
        if name not in given:
            values[name] = factory() if factory is not None else default  # type: ignore[call-arg]
    change.__dict__.update(values)
    object.__setattr__(change, "__pydantic_fields_set__", given)
    return change


class AuditEntry(SQLModel, table=True):
    """One link of a tenant's audit chain: ``hash = sha256(prev_hash + canonical JSON of
    {seq, at, actor, action, changeId, data})`` (see ``domain/audit.py``).

    Keyed by (tenant, seq) and, on SQLite, stored without a rowid: an append then writes
    one table b-tree and one index, not four (the cost per decision is measured in
    benchmarks/RESULTS.md).
    """

    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_entry_tenant_change", "tenant_id", "change_id", "seq"),
        {"sqlite_with_rowid": False},
    )
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=36)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=200)
    actor_name: str = Field(max_length=200)
    action: str = Field(max_length=32)
    change_id: str | None = Field(default=None, max_length=36)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The newest link of a tenant's chain; appending takes this row's lock first, so one
    tenant's writers take turns (on any number of instances) and other tenants never wait."""

    __tablename__ = "audit_head"
    __table_args__ = {"sqlite_with_rowid": False}
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=36)
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)


class WebhookEndpoint(SQLModel, table=True):
    """Where a tenant's events are POSTed, signed with ``secret`` (``whsec_…``); ``events``
    is the list of event types it gets. Removed endpoints are kept (their deliveries'
    history), marked by ``removed_at``."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_tenant", "tenant_id", "removed_at"),)
    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=36)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    removed_at: datetime | None = None


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint (the outbox row): its ``id`` is the ``webhook-id`` of
    every attempt. ``state``: pending → delivering (claimed by an instance until
    ``lease_until``) → pending again (a retry at ``next_attempt_at``), succeeded or
    failed. ``body`` is the exact JSON text that is signed and sent."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "state", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=36)
    endpoint_id: str = Field(foreign_key="webhook_endpoint.id", max_length=36)
    tenant_id: str = Field(max_length=36)
    event_type: str = Field(max_length=64)
    change_id: str | None = Field(default=None, max_length=36)
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=64)
    finished_at: datetime | None = None


class WebhookAttempt(SQLModel, table=True):
    """One attempt of a delivery: when, the response's status code (None: no response),
    how long it took, and what went wrong."""

    __tablename__ = "webhook_attempt"
    delivery_id: str = Field(foreign_key="webhook_delivery.id", primary_key=True,
                             max_length=36)
    attempt: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime
    status_code: int | None = None
    latency_ms: float
    error: str | None = Field(default=None, max_length=500)


class LoginLink(SQLModel, table=True):
    """A one-time console login link (``colaflow-mcp login-link``): only its token's
    SHA-256 is kept; ``used_at`` is set by the one request that consumes it."""

    __tablename__ = "console_login_link"
    token_hash: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=36)
    user: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None


class ConsoleSession(SQLModel, table=True):
    """A reviewer's browser session on the console: only the cookie value's SHA-256 is
    kept; ``ended_at`` is set at log out."""

    __tablename__ = "console_session"
    __table_args__ = (Index("ix_console_session_expires", "expires_at"),)
    id_hash: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=36)
    user: str = Field(max_length=200)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    ended_at: datetime | None = None
