"""Kill -9 between commit and a delivery's answer: another instance sends it (same
``webhook-id``), and a receiver that deduplicates by id processes it exactly once, never
with two attempts at once. Two `colaflow-mcp serve` processes on one PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.scale.cluster import cluster
from tests.webhooks.receiver import receiver

pytestmark = pytest.mark.anyio


async def claimer(database_url: str, delivery_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(
            "SELECT claimed_by FROM webhook_delivery WHERE id = $1", delivery_id)
        return None if value is None else str(value)
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_killed_sender_is_replaced_and_the_receiver_processes_once(
        tmp_path: Path) -> None:
    async with receiver() as r, cluster(tmp_path) as c:
        c.env.update({
            "COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "COLAFLOW_WEBHOOK_TIMEOUT_SECONDS": "2",  # a lease of 8 s
            "COLAFLOW_WEBHOOK_POLL_INTERVAL_SECONDS": "0.3",
        })
        added = json.loads(await anyio.to_thread.run_sync(lambda: c.cli(
            "webhooks", "add", "--tenant", "acme", "--url", r.url("/in"),
            "--events", "pending_change.approved", "--json")))
        r.secrets["/in"] = added["secret"]
        r.scripts["/in"].append("hang")  # the first attempt gets no answer
        async with c.instance(COLAFLOW_INSTANCE_ID="inst-a") as a, \
                c.instance(COLAFLOW_INSTANCE_ID="inst-b") as b:
            change = await c.propose(a, "Crash me")
            assert (await c.decide(a, change, "approve")).status_code == 200
            await r.wait_for(lambda: len(r.received) == 1)
            first = r.received[0]
            sender = await claimer(c.env["COLAFLOW_DATABASE_URL"], first.id)
            assert sender in ("inst-a", "inst-b")
            victim, survivor = (a, b) if sender == "inst-a" else (b, a)
            victim.server.kill()  # mid-attempt: committed, sent, never answered
            await r.wait_for(lambda: first.id in r.processed, within=30)
            assert survivor.server.proc.poll() is None

            assert {x.id for x in r.received} == {first.id}
            assert all(x.verified for x in r.received) and len(r.received) == 2
            assert list(r.processed) == [first.id] and r.concurrent_ids == []
            assert first.payload["data"]["pendingChangeId"] == change
            item: dict[str, Any] = {}
            with anyio.fail_after(30):  # the survivor records the answer after sending
                while item.get("state") != "succeeded":
                    report = json.loads(await anyio.to_thread.run_sync(lambda: c.cli(
                        "webhooks", "deliveries", added["id"], "--json")))
                    [item] = report["deliveries"]
            assert item["id"] == first.id and item["state"] == "succeeded"
            # The killed instance's attempt left no record; the survivor's is the second.
            assert [(x["attempt"], x["statusCode"]) for x in item["attempts"]] == [(2, 200)]


async def test_a_delivery_cut_off_by_kill_9_is_sent_after_a_restart(tmp_path: Path) -> None:
    """One instance on SQLite, killed while its attempt waits for an answer; started again
    on the same database, it sends the delivery again, same id; processed once."""
    from tests.core.test_cli import cli
    from tests.procs import AsyncServe
    from tests.webhooks.test_example import add_webhook

    key = json.loads(cli(tmp_path, "keys", "create", "--tenant", "acme", "--json").stdout)
    cli(tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB", "--name", "Web")
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
           "COLAFLOW_WEBHOOK_TIMEOUT_SECONDS": "1",  # a lease of 6.5 s
           "COLAFLOW_WEBHOOK_POLL_INTERVAL_SECONDS": "0.3"}
    async with receiver() as r:
        added = await anyio.to_thread.run_sync(add_webhook, tmp_path, r.url("/in"), env)
        r.secrets["/in"] = added["secret"]
        r.scripts["/in"].append("hang")
        async with AsyncServe(env, tmp_path) as first:
            async with httpx.AsyncClient(base_url=first.base_url) as c:
                made = await c.post("/api/mcp/pending-changes", json={
                    "tool": "create_issue",
                    "arguments": {"project_key": "WEB", "title": "Hi"}},
                    headers={"Authorization": f"Bearer {key['key']}"})
                assert made.status_code == 201
            await r.wait_for(lambda: len(r.received) == 1)
            first.kill()
            port = first.port
        async with AsyncServe(env, tmp_path, port=port):
            await r.wait_for(lambda: len(r.processed) == 1, within=30)
        assert {x.id for x in r.received} == set(r.processed) and len(r.received) == 2
        assert all(x.verified for x in r.received) and r.concurrent_ids == []
        assert r.received[0].payload["data"]["pendingChangeId"] == made.json()["id"]
