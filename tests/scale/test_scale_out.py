"""Two or more instances on PostgreSQL + Redis: every decision reaches every subscriber once,
through crashes, Redis outages and reconnects."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

from tests.mcp.mcpenv import Updates, mcp_client, watching
from tests.scale.agents import HubAgent
from tests.scale.cluster import cluster, recovery_passes

pytestmark = pytest.mark.anyio

async def test_hub_on_one_instance_and_mcp_on_the_other_get_each_decision_once(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, c.instance() as a, c.instance() as b, \
            anyio.create_task_group() as tg:
        ids = [await c.propose(a if i % 2 else b, f"change {i}",
                               expires_in=1.5 if i >= 4 else None) for i in range(6)]
        uris = [f"colaflow://pending-changes/{i}" for i in ids]
        hub = HubAgent()
        await hub.connect(a.hub_url, c.key, tg)
        for cid in ids:
            done = await hub.subscribe(cid)
            assert "error" not in done, done
        legacy, modern = Updates(), Updates()
        async with mcp_client(b, c.key, "legacy", legacy) as lc, \
                mcp_client(b, c.key, "modern", modern) as mc, \
                watching(lc, "legacy", legacy, uris), watching(mc, "modern", modern, uris):
            # Decisions through both instances; two changes expire on their own.
            assert (await c.decide(a, ids[0], "approve")).status_code == 200
            assert (await c.decide(b, ids[1], "approve")).status_code == 200
            assert (await c.decide(a, ids[2], "reject")).status_code == 200
            assert (await c.decide(b, ids[3], "reject")).status_code == 200
            await hub.wait_for(set(ids), within=15)
            with anyio.fail_after(15):
                for uri in uris:
                    await legacy.wait_for(uri)
                    await modern.wait_for(uri)
            await recovery_passes(a, b)
            assert Counter(legacy.uris) == Counter(dict.fromkeys(uris, 1))
            assert Counter(modern.uris) == Counter(dict.fromkeys(uris, 1))
        assert dict(hub.events) == dict.fromkeys(ids, 1)
        assert [hub.payloads[i]["status"] for i in ids] == [
            "Approved", "Approved", "Rejected", "Rejected", "Expired", "Expired"]
        assert hub.payloads[ids[0]]["executionResult"]["success"] is True
        tg.cancel_scope.cancel()


# The recovery loops far away: what crosses from one instance to the other came over Redis.
NETS_FAR_AWAY = {"COLAFLOW_ANNOUNCE_SWEEP_INTERVAL_SECONDS": "3600",
                 "COLAFLOW_RECONCILE_INTERVAL_SECONDS": "3600"}


async def test_a_decision_crosses_the_backplane_with_the_safety_nets_far_away(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, c.instance(**NETS_FAR_AWAY) as a, \
            c.instance(**NETS_FAR_AWAY) as b, anyio.create_task_group() as tg:
        ids = [await c.propose(a, f"across {i}") for i in range(2)]
        hub = HubAgent()
        await hub.connect(b.hub_url, c.key, tg)
        for cid in ids:
            assert "error" not in await hub.subscribe(cid)
        legacy = Updates()
        uris = [f"colaflow://pending-changes/{i}" for i in ids]
        async with mcp_client(b, c.key, "legacy", legacy) as lc, \
                watching(lc, "legacy", legacy, uris):
            assert (await c.decide(a, ids[0], "approve")).status_code == 200
            assert (await c.decide(a, ids[1], "reject")).status_code == 200
            await hub.wait_for(set(ids), within=10)
            with anyio.fail_after(10):
                for uri in uris:
                    await legacy.wait_for(uri)
        assert [hub.payloads[i]["status"] for i in ids] == ["Approved", "Rejected"]
        tg.cancel_scope.cancel()


async def test_decision_survives_kill_9_between_commit_and_publish(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, c.instance() as b, anyio.create_task_group() as tg:
        hub = HubAgent()
        await hub.connect(b.hub_url, c.key, tg)
        async with c.instance(COLAFLOW_PAUSE_AFTER_COMMIT_SECONDS="60") as a:
            cid = await c.propose(b, "doomed instance")
            await hub.subscribe(cid)

            async def approve_and_hang() -> None:
                try:
                    await c.decide(a, cid, "approve")
                except Exception:
                    pass  # the instance dies mid-request

            since = a.server.mark()
            tg.start_soon(approve_and_hang)
            # Wait for the commit (the hook says so once it has committed), then kill
            # without mercy.
            await a.server.wait_for_output(
                lambda lines: any("pausing" in line for line in lines), within=15,
                since=since)
            assert await c.status(cid) == "Approved"
            a.server.kill()
        started = anyio.current_time()
        await hub.wait_for({cid}, within=10)
        took = anyio.current_time() - started
        assert hub.payloads[cid]["status"] == "Approved"
        assert hub.payloads[cid]["executionResult"]["success"] is True
        await recovery_passes(b)
        assert hub.events[cid] == 1
        assert took < 5, took
        tg.cancel_scope.cancel()


def lost_connection(lines: list[str]) -> bool:
    return any("redis backplane connection lost" in line for line in lines)


def listening(lines: list[str]) -> bool:
    """The listener is back after a loss (both in the lines given)."""
    lost = next((i for i, line in enumerate(lines)
                 if "redis backplane connection lost" in line), None)
    return lost is not None and any("redis backplane listening" in line
                                    for line in lines[lost:])


async def test_redis_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, c.instance() as a, c.instance() as b, \
            anyio.create_task_group() as tg:
        hub_a, hub_b = HubAgent("on-a"), HubAgent("on-b")
        await hub_a.connect(a.hub_url, c.key, tg)
        await hub_b.connect(b.hub_url, c.key, tg)
        ids = [await c.propose(a, f"outage {i}") for i in range(8)]
        for cid in ids:
            await hub_a.subscribe(cid)
            await hub_b.subscribe(cid)
        legacy = Updates()
        uris = [f"colaflow://pending-changes/{i}" for i in ids]
        async with mcp_client(b, c.key, "legacy", legacy) as lc, \
                watching(lc, "legacy", legacy, uris):
            since = [a.server.mark(), b.server.mark()]
            c.proxy.cut()
            for x, mark in zip((a, b), since, strict=True):
                await x.server.wait_for_output(lost_connection, within=15, since=mark)
            assert not (await a.client.get("/health")).json()["backplane"]["listening"]
            health = (await b.client.get("/health")).json()
            assert health["status"] == "degraded"
            # Decisions keep working on both instances while Redis is unreachable.
            for i, cid in enumerate(ids):
                via = a if i % 2 else b
                r = await c.decide(via, cid, "approve" if i % 3 else "reject")
                assert r.status_code == 200, r.text
            c.proxy.restore()
            await hub_a.wait_for(set(ids), within=20)
            await hub_b.wait_for(set(ids), within=20)
            with anyio.fail_after(20):
                for uri in uris:
                    await legacy.wait_for(uri)
            await recovery_passes(a, b)
            assert Counter(legacy.uris) == Counter(dict.fromkeys(uris, 1))
        assert dict(hub_a.events) == dict.fromkeys(ids, 1)
        assert dict(hub_b.events) == dict.fromkeys(ids, 1)
        # (The listener came back: the decisions above crossed Redis after the restore.)
        await a.server.wait_for_output(listening, within=15, since=since[0])
        assert (await a.client.get("/health")).json()["backplane"]["listening"]
        tg.cancel_scope.cancel()


async def test_client_moves_to_the_other_instance_and_gets_what_it_missed(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, c.instance() as b, anyio.create_task_group() as tg:
        agent = HubAgent()
        async with c.instance() as a:
            await agent.connect(a.hub_url, c.key, tg)
            cid = await c.propose(a, "moving")
            await agent.subscribe(cid)
            a.server.kill()
        r = await c.decide(b, cid, "reject")
        assert r.status_code == 200
        await agent.drop()
        await agent.connect(b.hub_url, c.key, tg)
        snapshot = await agent.subscribe(cid)
        assert snapshot["result"]["status"] == "Rejected"
        await agent.wait_for({cid}, within=5)
        assert agent.payloads[cid]["reason"].startswith("no")
        await recovery_passes(b)
        assert agent.events[cid] == 1
        tg.cancel_scope.cancel()


async def test_expiry_races_across_instances_expire_and_announce_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, c.instance() as a, c.instance() as b, \
            anyio.create_task_group() as tg:
        hub_a, hub_b = HubAgent("on-a"), HubAgent("on-b")
        await hub_a.connect(a.hub_url, c.key, tg)
        await hub_b.connect(b.hub_url, c.key, tg)
        ids = [await c.propose(a if i % 2 else b, f"expiring {i}", expires_in=1.0)
               for i in range(20)]
        for cid in ids:
            await hub_a.subscribe(cid)
            await hub_b.subscribe(cid)
        await hub_a.wait_for(set(ids), within=10)
        await hub_b.wait_for(set(ids), within=10)
        await recovery_passes(a, b)
        assert dict(hub_a.events) == dict.fromkeys(ids, 1)
        assert dict(hub_b.events) == dict.fromkeys(ids, 1)
        assert {p["status"] for p in hub_a.payloads.values()} == {"Expired"}
        # One decision each: every payload carries the same decision time on both sides.
        assert {k: v["timestamp"] for k, v in hub_a.payloads.items()} == \
            {k: v["timestamp"] for k, v in hub_b.payloads.items()}
        tg.cancel_scope.cancel()
