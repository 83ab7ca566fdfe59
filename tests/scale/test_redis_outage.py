"""Redis stopped and started again (a real redis-server of the test's own, not a proxy cut)
under two instances on PostgreSQL: what docs/scale-out.md promises for an outage.

Decisions made while Redis is down reach every subscriber on both instances (hub
connections, MCP sessions of both eras, reviewers' queues) once: those on the deciding
instance at once, the others by their instance's reconcile, during the outage or when
Redis is back; the service stays up (ready again once Redis is back); the logs say what
happened in a few lines, however long the outage and however many decisions it holds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest

from tests.mcp.mcpenv import Mode, Updates, mcp_client, watching
from tests.scale.agents import HubAgent, QueueReviewer
from tests.scale.cluster import Cluster, Remote, cluster, recovery_passes, server_passes
from tests.scale.redis_server import own_redis

pytestmark = pytest.mark.anyio

LOST = "redis backplane connection lost"
BACK = "redis backplane listening"


@dataclass
class Watchers:
    """Everyone on one instance who waits for decisions."""

    hub: HubAgent
    reviewer: QueueReviewer
    mcp: dict[Mode, Updates] = field(default_factory=dict)


@asynccontextmanager
async def watchers(c: Cluster, x: Remote, name: str, ids: list[str],
                   tg: anyio.abc.TaskGroup) -> AsyncIterator[Watchers]:
    """A hub agent subscribed to ``ids``, a reviewer on the review queue, and an MCP
    client of each era watching ``ids``, all on instance ``x``."""
    w = Watchers(HubAgent(f"hub-{name}"), QueueReviewer(f"reviewer-{name}"))
    await w.hub.connect(x.hub_url, c.key, tg)
    for cid in ids:
        assert "error" not in await w.hub.subscribe(cid)
    await w.reviewer.connect(x.hub_url, c.token, tg)
    assert set(ids) <= set(await w.reviewer.subscribe_queue())
    uris = [f"colaflow://pending-changes/{i}" for i in ids]
    async with AsyncExitStack() as stack:
        for mode in ("legacy", "modern"):
            w.mcp[mode] = Updates()
            client = await stack.enter_async_context(mcp_client(x, c.key, mode, w.mcp[mode]))
            await stack.enter_async_context(watching(client, mode, w.mcp[mode], uris))
        yield w


def target(i: int) -> str:
    """How the test decides the i-th change (and so the event it expects)."""
    return "PendingChangeApproved" if i % 3 else "PendingChangeRejected"


async def everyone_has(w: Watchers, ids: list[str], within: float) -> None:
    await w.hub.wait_for(set(ids), within=within)
    await w.reviewer.wait_for_events({(target(i), cid) for i, cid in enumerate(ids)},
                                     within=within)
    with anyio.fail_after(within):
        for updates in w.mcp.values():
            for cid in ids:
                await updates.wait_for(f"colaflow://pending-changes/{cid}")


def once_each(w: Watchers, ids: list[str]) -> None:
    """Each decision reached each of them exactly once."""
    assert dict(w.hub.events) == dict.fromkeys(ids, 1), w.hub.events
    decided = Counter(cid for event, cid in w.reviewer.seen if event != "PendingChangeCreated")
    assert decided == Counter(dict.fromkeys(ids, 1)), w.reviewer.seen
    for mode, updates in w.mcp.items():
        assert Counter(updates.uris) == Counter(
            {f"colaflow://pending-changes/{cid}": 1 for cid in ids}), (mode, updates.uris)


def complaints(lines: list[str]) -> Counter[str]:
    """Warnings, errors and tracebacks, by message (the time cut off, ids blurred)."""
    said = [line.split(" ", 2)[-1].strip() for line in lines
            if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    return Counter(re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", line) for line in said)


async def said_by_each(instances: tuple[Remote, ...], marks: list[int], text: str) -> None:
    """Each instance logs a line with ``text`` after its mark, within 15 s."""
    for x, mark in zip(instances, marks, strict=True):
        await x.server.wait_for_output(
            lambda lines: any(text in line for line in lines), within=15, since=mark)


async def test_redis_stopped_and_started_again_loses_nothing_and_says_so_briefly(
        tmp_path: Path) -> None:
    with own_redis(tmp_path) as redis:
        async with cluster(tmp_path, redis.url) as c, c.instance() as a, c.instance() as b, \
                anyio.create_task_group() as tg:
            ids = [await c.propose(a if i % 2 else b, f"outage {i}") for i in range(6)]
            async with watchers(c, a, "a", ids, tg) as on_a, \
                    watchers(c, b, "b", ids, tg) as on_b:
                marks = [a.server.mark(), b.server.mark()]
                await anyio.to_thread.run_sync(redis.stop)
                await said_by_each((a, b), marks, LOST)
                # Up, serving, but not ready: readiness names the backplane.
                for x in (a, b):
                    assert (await x.client.get("/health/live")).status_code == 200
                    ready = await x.client.get("/health/ready")
                    assert ready.status_code == 503 and ready.json()["failing"] == ["backplane"]
                # Decisions keep working on both instances while Redis is down, and reach
                # every subscriber on both: the other instance's by its reconcile.
                for i, cid in enumerate(ids):
                    how = "approve" if target(i) == "PendingChangeApproved" else "reject"
                    r = await c.decide(a if i % 2 else b, cid, how)
                    assert r.status_code == 200, r.text
                for w in (on_a, on_b):
                    await everyone_has(w, ids, within=20)
                # A proposal made now reaches the reviewers on both instances too.
                during = await c.propose(a, "proposed during the outage")
                for w in (on_a, on_b):
                    await w.reviewer.wait_for_events({("PendingChangeCreated", during)},
                                                     within=20)
                # A longer outage: the listener keeps retrying, the publisher and the sweep
                # keep failing; the logs must not grow with it.
                await server_passes(a.server, b.server, passes=10)
                for x, mark in zip((a, b), marks, strict=True):
                    said = complaints(x.server.log[mark:])
                    assert sum(said.values()) <= 3 and "Traceback" not in str(said), \
                        "\n".join(f"{n} x {message}" for message, n in said.items())
                marks = [a.server.mark(), b.server.mark()]
                await anyio.to_thread.run_sync(redis.start)
                await said_by_each((a, b), marks, BACK)
                await recovery_passes(a, b)
                for w in (on_a, on_b):
                    once_each(w, ids)
                    assert w.reviewer.seen.count(("PendingChangeCreated", during)) == 1
                for x, mark in zip((a, b), marks, strict=True):
                    assert not complaints(x.server.log[mark:])
                    assert (await x.client.get("/health/ready")).status_code == 200
                # And the backplane carries decisions again.
                late = await c.propose(a, "after the outage")
                await on_b.hub.subscribe(late)
                assert (await c.decide(a, late, "approve")).status_code == 200
                await on_b.hub.wait_for({late}, within=10)
            tg.cancel_scope.cancel()


# No announce sweep, no periodic reconcile: what reaches the other instance after the
# outage came by the reconcile each instance runs when its Redis link is back.
NETS_FAR_AWAY = {"COLAFLOW_ANNOUNCE_SWEEP_INTERVAL_SECONDS": "3600",
                 "COLAFLOW_RECONCILE_INTERVAL_SECONDS": "3600"}


async def test_what_an_instance_missed_while_redis_was_down_arrives_when_it_is_back(
        tmp_path: Path) -> None:
    with own_redis(tmp_path) as redis:
        async with cluster(tmp_path, redis.url) as c, c.instance(**NETS_FAR_AWAY) as a, \
                c.instance(**NETS_FAR_AWAY) as b, anyio.create_task_group() as tg:
            ids = [await c.propose(a, f"missed {i}") for i in range(4)]
            async with watchers(c, a, "a", ids, tg) as on_a, \
                    watchers(c, b, "b", ids, tg) as on_b:
                mark = b.server.mark()
                await anyio.to_thread.run_sync(redis.stop)
                await b.server.wait_for_output(
                    lambda lines: any(LOST in line for line in lines), within=15, since=mark)
                for i, cid in enumerate(ids):
                    how = "approve" if target(i) == "PendingChangeApproved" else "reject"
                    assert (await c.decide(a, cid, how)).status_code == 200
                await everyone_has(on_a, ids, within=10)  # a's own: at once
                # Nothing else carries them to b while Redis is down.
                assert not on_b.hub.events and not any(on_b.mcp[m].uris for m in on_b.mcp)
                await anyio.to_thread.run_sync(redis.start)
                await everyone_has(on_b, ids, within=20)
                await b.server.wait_for_output(
                    lambda lines: any("reconcile delivered" in line for line in lines),
                    within=10, since=mark)
                for w in (on_a, on_b):
                    once_each(w, ids)
            tg.cancel_scope.cancel()
