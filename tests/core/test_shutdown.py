"""A clean shutdown right after decisions: everything published is recorded, nothing hangs."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import col, select

from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange
from tests.harness import fast_settings, in_process

pytestmark = pytest.mark.anyio


async def test_shutdown_right_after_decisions_drains_and_leaves_no_task(
    any_database_url: str,
) -> None:
    # The publisher and the announce-marker used to be cancelled mid-write at shutdown;
    # SQLAlchemy then terminated the aiosqlite connection with a close task that could
    # hang the event loop's close (seen in CI as a 120 s teardown timeout).
    settings = fast_settings(any_database_url, announce_grace_seconds=3600.0)
    decided: list[str] = []
    before = asyncio.all_tasks()  # the test runner's own
    for i in range(5):  # each run restarts the same database
        async with in_process(settings) as h:
            tenant = f"t{i}"
            key, token = await h.agent_key(tenant), await h.reviewer_token(tenant)
            await h.project(tenant)
            ids = [(await h.propose(key))["id"] for _ in range(3)]
            for change_id in ids:
                assert (await h.approve(token, change_id)).status_code == 200
            decided += ids
        # Stopped with the decisions just committed: nothing of the app is still running.
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert left == [], [t.get_coro() for t in left]

    # Each decision was published before the instance stopped and recorded as such, so
    # no other instance's sweep has to announce it again.
    db = Database(any_database_url)
    try:
        async with db.read() as s:
            rows = (await s.exec(select(PendingChange).where(
                col(PendingChange.id).in_(decided)))).all()
    finally:
        await db.dispose()
    assert len(rows) == len(decided)
    assert [r.id for r in rows if r.announced_at is None] == []
