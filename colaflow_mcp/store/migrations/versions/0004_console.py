"""Reviewer console: one-time login links and browser sessions (both stored hashed).

Revision ID: 0004_console
Revises: 0003_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_console"
down_revision: str | None = "0003_audit"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "console_login_link",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"],
                                name="fk_console_login_link_tenant_id_tenant"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_login_link"),
    )
    op.create_table(
        "console_session",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"],
                                name="fk_console_session_tenant_id_tenant"),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_session"),
    )
    op.create_index("ix_console_session_expires", "console_session", ["expires_at"])


def downgrade() -> None:
    """Drop both tables: every console session ends, unused links stop working."""
    op.drop_index("ix_console_session_expires", table_name="console_session")
    op.drop_table("console_session")
    op.drop_table("console_login_link")
