"""PostgreSQL: the decision path's set-wise statements on ``pending_change`` read their rows
by primary key, whatever the table's statistics and however big the table was when the
connection first ran them (benchmarks/RESULTS.md, "Where PostgreSQL's own CPU goes").

Without statistics (a new database; autovacuum off or behind) the planner read every
change of the tenant per decision group through ``ix_pending_change_tenant_created`` /
``ix_pending_change_unannounced``, and a generic plan kept from the first executions on a
small table stayed a sequential scan as the table grew. Counted here with the
transaction's own scan counters (``pg_stat_xact_user_tables``, per index
``pg_stat_get_xact_numscans``), on the
statements as the application sends them, on one pooled connection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session

from colaflow_mcp.store import statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import new_id, utcnow

pytestmark = pytest.mark.anyio

_SCANS = ("SELECT coalesce(sum(seq_tup_read), 0) AS seq, coalesce(sum(idx_tup_fetch), 0) AS idx"
          " FROM pg_stat_xact_user_tables WHERE relname = 'pending_change'")
_INDEXES = ("SELECT c.relname AS name, pg_stat_get_xact_numscans(c.oid) AS n"
            " FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'pending_change'::regclass")


def _add_changes(s: Session, tenant: str, n: int) -> list[str]:
    fast = native(s.connection())
    assert fast is not None
    ids = [new_id() for _ in range(n)]
    now = utcnow()
    fast.execute(
        "INSERT INTO pending_change (id, tenant_id, tool_name, operation, entity_type, "
        "arguments, proposed_arguments, edited, diff, summary, status, created_at, "
        "expires_at) SELECT id, $1, 'create_issue', 'create', 'issue', '{}', '{}', false, "
        "'{}', 'a change', 'Pending', $2, $3 FROM unnest($4::text[]) AS id",
        tenant, now, now + timedelta(hours=1), ids)
    return ids


def _decide(s: Session, tenant: str, ids: list[str]) -> dict[str, Any]:
    """Claim, results and mark of ``ids`` in one transaction: the pending_change rows
    each statement read, and through which indexes."""
    fast = native(s.connection())
    assert fast is not None
    seen: dict[str, Any] = {}

    def counted(name: str, run: Any) -> None:
        before = fast.fetch(_SCANS)[0]
        idx_before = {r["name"]: r["n"] for r in fast.fetch(_INDEXES)}
        run()
        after = fast.fetch(_SCANS)[0]
        idx_after = {r["name"]: r["n"] for r in fast.fetch(_INDEXES)}
        seen[name] = {
            "read": (after["seq"] - before["seq"]) + (after["idx"] - before["idx"]),
            "indexes": {k for k, v in idx_after.items() if v != idx_before.get(k, 0)}}

    k = len(ids)
    now = utcnow()
    counted("claim", lambda: fast.fetch(
        statements.NATIVE_LOCK_HEAD_CLAIM_MANY, tenant, now, ids, ["Approved"] * k,
        ["r"] * k, [None] * k, [False] * k))
    counted("results", lambda: fast.execute(
        statements.NATIVE_RECORD_RESULTS, ids, ["{}"] * k, [None] * k))
    counted("mark", lambda: s.connection().execute(
        statements.MARK_ANNOUNCED, {"p_ids": ids, "p_now": now}))
    return seen


async def test_engine_plans_each_statement_for_its_parameters(any_database_url: str) -> None:
    db = Database(any_database_url, pool_size=1)
    if db.is_sqlite:
        await db.dispose()
        pytest.skip("PostgreSQL only")
    try:
        def mode(s: Session) -> str:
            fast = native(s.connection())
            assert fast is not None
            return str(fast.fetch("SHOW plan_cache_mode")[0][0])

        assert await db.transact(mode) == "force_custom_plan"
    finally:
        await db.dispose()


async def test_decision_statements_read_their_rows_by_primary_key(
        any_database_url: str) -> None:
    db = Database(any_database_url, pool_size=1)  # one connection: its prepared statements
    if db.is_sqlite:
        await db.dispose()
        pytest.skip("PostgreSQL only")
    try:
        await db.create_schema()
        tenant = new_id()

        def setup(s: Session) -> list[str]:
            fast = native(s.connection())
            assert fast is not None
            fast.execute("INSERT INTO tenant (id, slug, name, created_at) "
                         "VALUES ($1, $1, 't', $2)", tenant, utcnow())
            fast.execute("INSERT INTO audit_head (tenant_id, seq, hash) VALUES ($1, 0, '')",
                         tenant)
            return _add_changes(s, tenant, 200)

        small = await db.transact(setup)
        # The first executions on a small table: where a generic plan would be chosen.
        for i in range(8):
            await db.transact(lambda s, i=i: _decide(s, tenant, small[i * 4:i * 4 + 4]))
        big = await db.transact(lambda s: _add_changes(s, tenant, 3000))
        for part in (big[100:104], big[2000:2003]):
            seen = await db.transact(lambda s, part=part: _decide(s, tenant, part))
            for name, got in seen.items():
                assert got["read"] <= 2 * len(part), (name, got)
                assert got["indexes"] <= {"pending_change_pkey"}, (name, got)
    finally:
        await db.dispose()
