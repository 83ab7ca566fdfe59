"""Baseline: the schema of release 0.1.0 (tables, indexes and constraints as it made them).

A database that release created has no version table; ``store.migrate`` recognises it and
stamps it at this revision instead of running it.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

from alembic import op

from colaflow_mcp.store.migrations import baseline

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create every table of release 0.1.0."""
    # The frozen table definitions emit exactly the DDL that release's create_all did.
    baseline.metadata.create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    """Drop every table (to an empty database)."""
    baseline.metadata.drop_all(op.get_bind(), checkfirst=False)
