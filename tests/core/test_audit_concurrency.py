"""One chain per tenant under concurrent writers on PostgreSQL, across two instances, and
different tenants never wait for each other."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from colaflow_mcp.domain import audit
from colaflow_mcp.domain.recording import Actor, Transition
from colaflow_mcp.store.engine import async_url
from tests.harness import Harness, create_pg_database, fast_settings, in_process

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def pg_harness() -> AsyncIterator[Harness]:
    async with in_process(fast_settings(await create_pg_database())) as h:
        yield h


async def _tenant(h: Harness, slug: str) -> str:
    """tenant_id:slug:key_id of a tenant with a WEB project and an agent key."""
    key = await h.agent_key(slug, "worker")
    await h.project(slug)
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None
    return f"{principal.tenant_id}:{slug}:{principal.api_key_id}"


async def test_two_instances_writing_at_once_make_one_chain_per_tenant(
        pg_harness: Harness) -> None:
    h = pg_harness
    tenants = [await _tenant(h, "acme"), await _tenant(h, "globex")]
    n = 30
    cmd = [sys.executable, "-m", "tests.core.audit_worker", h.settings.database_url, str(n),
           *tenants]
    with anyio.fail_after(120):
        async with await anyio.open_process(cmd) as w1, await anyio.open_process(cmd) as w2:
            workers = [w1, w2]
            outputs = [TextReceiveStream(w.stdout) for w in workers]  # type: ignore[arg-type]
            buffers = ["", ""]

            async def line(i: int) -> str:
                while "\n" not in buffers[i]:
                    buffers[i] += await outputs[i].receive()
                first, buffers[i] = buffers[i].split("\n", 1)
                return first

            for i in range(2):
                assert await line(i) == "ready"
            for w in workers:
                assert w.stdin is not None
                await w.stdin.send(b"go\n")
            results: list[dict[str, Any]] = [json.loads(await line(0)),
                                             json.loads(await line(1))]
    for spec in tenants:
        tenant_id = spec.split(":")[0]
        counts = [r[tenant_id] for r in results]
        assert all(c["proposed"] == n for c in counts), results
        # key.created, then per task: proposed, and approved + executed or rejected.
        expected = 1 + sum(c["proposed"] + 2 * c["approved"] + c["rejected"] for c in counts)
        verdict = await h.runtime.audit.verify(tenant_id)
        assert (verdict.ok, verdict.entries) == (True, expected), verdict


async def test_an_open_append_blocks_its_own_tenant_only(pg_harness: Harness) -> None:
    """The head row lock: a transaction appending to acme's chain holds acme's writers
    until it ends; globex appends meanwhile."""
    h = pg_harness
    acme = (await _tenant(h, "acme")).split(":")[0]
    globex = (await _tenant(h, "globex")).split(":")[0]
    engine = create_async_engine(async_url(h.settings.database_url))

    def entry(tenant_id: str) -> list[Transition]:
        return [Transition("key.created", tenant_id, Actor("operator", "cli", "test"))]

    try:
        async with engine.connect() as holder, engine.connect() as other:
            await holder.begin()
            await holder.run_sync(lambda c: audit.append(c, acme, entry(acme)))
            await other.begin()
            await other.execute(text("SET LOCAL lock_timeout = '3s'"))
            await other.run_sync(lambda c: audit.append(c, globex, entry(globex)))
            await other.commit()  # globex did not wait for acme's open transaction
            await other.begin()
            await other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                await other.run_sync(lambda c: audit.append(c, acme, entry(acme)))
            await other.rollback()
            await holder.commit()
    finally:
        await engine.dispose()
    for tenant_id in (acme, globex):
        assert (await h.runtime.audit.verify(tenant_id)) == audit.Verdict(2)
