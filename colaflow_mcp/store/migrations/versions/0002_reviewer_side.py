"""Reviewer side: who proposed (the key's name), why (rationale), and reviewer edits
(proposed vs applied arguments, edited, edited_by) on every pending change.

Revision ID: 0002_reviewer_side
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_reviewer_side"
down_revision: str | None = "0001_baseline"
branch_labels: str | None = None
depends_on: str | None = None

# The tables as this revision sees them (never import colaflow_mcp.store.tables here).
pending_change = sa.table(
    "pending_change",
    sa.column("api_key_id", sa.String(36)),
    sa.column("api_key_name", sa.String(200)),
    sa.column("arguments", sa.JSON()),
    sa.column("proposed_arguments", sa.JSON()),
)
api_key = sa.table("api_key", sa.column("id", sa.String(36)), sa.column("name", sa.String(200)))


def upgrade() -> None:
    """Add the columns; existing changes were proposed as applied, unedited, by their key."""
    with op.batch_alter_table("pending_change") as batch:
        batch.add_column(sa.Column("api_key_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("proposed_arguments", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rationale", sa.Text(), nullable=True))
        batch.add_column(sa.Column("edited", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("edited_by", sa.String(200), nullable=True))
    # Set-based backfills: one statement each, whatever the row count. A change whose key
    # was deleted keeps a null name (its id is still there).
    op.execute(pending_change.update().values(
        proposed_arguments=sa.func.coalesce(pending_change.c.arguments, sa.text("'{}'"))))
    key_name = (sa.select(api_key.c.name)
                .where(api_key.c.id == pending_change.c.api_key_id).scalar_subquery())
    op.execute(pending_change.update().values(api_key_name=key_name))
    with op.batch_alter_table("pending_change") as batch:
        batch.alter_column("proposed_arguments", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    """Drop the columns (edits, rationales and key names recorded since are lost)."""
    with op.batch_alter_table("pending_change") as batch:
        batch.drop_column("edited_by")
        batch.drop_column("edited")
        batch.drop_column("rationale")
        batch.drop_column("proposed_arguments")
        batch.drop_column("api_key_name")
