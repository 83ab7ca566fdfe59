"""The schema of release 0.1.0, frozen: what the baseline revision creates.

A copy, on purpose: ``models.py`` moves on with later revisions, the baseline must not.
The tables are declared exactly as SQLModel declared them in that release, so that
``create_all`` emits the same DDL (types, NOT NULLs, index and constraint names) on
SQLite and PostgreSQL as a database created by that release has.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()


def _id() -> Column[str]:
    return Column("id", String(36), primary_key=True)


def _tenant() -> Column[str]:
    return Column("tenant_id", String(36), ForeignKey("tenant.id"), nullable=False)


def _at(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


Table(
    "cola_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(), nullable=False),
)

Table(
    "tenant", metadata,
    _id(),
    Column("slug", String(64), nullable=False, unique=True, index=True),
    Column("name", String(200), nullable=False),
    _at("created_at"),
)

Table(
    "api_key", metadata,
    _id(),
    Column("tenant_id", String(36), ForeignKey("tenant.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True, index=True),
    Column("key_hash", String(64), nullable=False),
    _at("created_at"),
    _at("expires_at", True),
    _at("revoked_at", True),
    _at("last_used_at", True),
)

Table(
    "project", metadata,
    _id(),
    Column("tenant_id", String(36), ForeignKey("tenant.id"), nullable=False, index=True),
    Column("key", String(10), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", String(10_000), nullable=False),
    Column("next_issue_number", Integer(), nullable=False),
    _at("created_at"),
    _at("updated_at"),
    UniqueConstraint("tenant_id", "key"),
)

Table(
    "issue", metadata,
    _id(),
    Column("tenant_id", String(36), ForeignKey("tenant.id"), nullable=False, index=True),
    Column("project_id", String(36), ForeignKey("project.id"), nullable=False, index=True),
    Column("key", String(24), nullable=False),
    Column("number", Integer(), nullable=False),
    Column("title", String(500), nullable=False),
    Column("description", String(50_000), nullable=False),
    Column("type", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("priority", String(20), nullable=False),
    Column("assignee", String(200)),
    _at("created_at"),
    _at("updated_at"),
    UniqueConstraint("tenant_id", "key"),
)

Table(
    "comment", metadata,
    _id(),
    Column("tenant_id", String(36), ForeignKey("tenant.id"), nullable=False, index=True),
    Column("issue_id", String(36), ForeignKey("issue.id"), nullable=False, index=True),
    Column("author", String(200), nullable=False),
    Column("body", String(50_000), nullable=False),
    _at("created_at"),
    _at("updated_at"),
)

Table(
    "pending_change", metadata,
    _id(),
    _tenant(),
    Column("api_key_id", String(36)),
    Column("tool_name", String(64), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("entity_type", String(16), nullable=False),
    Column("entity_id", String(36)),
    Column("arguments", JSON()),
    Column("diff", JSON()),
    Column("summary", String(500), nullable=False),
    Column("status", String(16), nullable=False),
    _at("created_at"),
    _at("expires_at"),
    _at("decided_at", True),
    Column("decided_by", String(200)),
    Column("reason", String(2000)),
    Column("execution_result", JSON()),
    _at("announced_at", True),
    Index("ix_pending_change_status_expires", "status", "expires_at"),
    Index("ix_pending_change_unannounced", "announced_at", "decided_at"),
    Index("ix_pending_change_tenant_created", "tenant_id", "created_at"),
)

# Defaults the old additive upgrader gave columns it added to existing rows (it could add
# only NOT NULL columns that have one). Kept for adopting databases older than 0.1.0.
LEGACY_DEFAULTS: dict[tuple[str, str], str | int] = {
    ("tenant", "name"): "", ("api_key", "name"): "", ("project", "description"): "",
    ("project", "next_issue_number"): 1, ("issue", "description"): "",
    ("issue", "type"): "Task", ("issue", "status"): "ToDo", ("issue", "priority"): "Medium",
    ("comment", "author"): "", ("pending_change", "summary"): "",
    ("pending_change", "status"): "Pending",
}
