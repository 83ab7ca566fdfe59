"""Audit trail: per-tenant hash chains (audit_entry) and their heads (audit_head), keyed
by tenant (and seq); on SQLite without rowids, so that an append writes fewer b-trees.

History from before this revision is not in the trail: each tenant's chain starts with
the first proposal, decision or key change after the upgrade.

Revision ID: 0003_audit
Revises: 0002_reviewer_side
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_audit"
down_revision: str | None = "0002_reviewer_side"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "audit_entry",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("change_id", sa.String(36), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"],
                                name="fk_audit_entry_tenant_id_tenant"),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_audit_entry"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_audit_entry_tenant_change", "audit_entry",
                    ["tenant_id", "change_id", "seq"])
    op.create_table(
        "audit_head",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"],
                                name="fk_audit_head_tenant_id_tenant"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_head"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop the trail: this loses every audit entry, so export it first
    (``colaflow-mcp audit export``)."""
    op.drop_table("audit_head")
    op.drop_index("ix_audit_entry_tenant_change", table_name="audit_entry")
    op.drop_table("audit_entry")
