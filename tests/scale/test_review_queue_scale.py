"""The review queue across instances (PostgreSQL + Redis): a reviewer on one instance sees
proposals and decisions made on another, gets the current queue when it comes back, and
is reconciled from the database after a backplane outage."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from tests.harness import REDIS_URL, redis_address, redis_url_at
from tests.netproxy import TcpProxy
from tests.scale.agents import QueueReviewer
from tests.scale.cluster import Cluster, Remote, cluster

pytestmark = pytest.mark.anyio

# The recovery loops far away: what crosses between instances came over Redis, or (after
# an outage) from the reconcile pass every reconnect of the backplane runs.
NETS_FAR_AWAY = {"COLAFLOW_ANNOUNCE_SWEEP_INTERVAL_SECONDS": "3600",
                 "COLAFLOW_RECONCILE_INTERVAL_SECONDS": "3600"}


async def _nothing_more(reviewer: QueueReviewer) -> list[tuple[str, str]]:
    """Everything received before a round trip's completion."""
    done = await reviewer.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    assert "error" not in done
    return list(reviewer.seen)


async def _connected(c: Cluster, via: Remote, tg: anyio.abc.TaskGroup,
                     name: str = "reviewer") -> tuple[QueueReviewer, list[str]]:
    reviewer = QueueReviewer(name)
    await reviewer.connect(via.hub_url, c.token, tg)
    return reviewer, await reviewer.subscribe_queue()


async def test_a_reviewer_on_one_instance_sees_what_happens_on_the_other(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, c.instance(**NETS_FAR_AWAY) as a, \
            c.instance(**NETS_FAR_AWAY) as b, anyio.create_task_group() as tg:
        waiting = await c.propose(b, "waiting")
        reviewer, pending = await _connected(c, a, tg)
        assert pending == [waiting]
        fresh = await c.propose(b, "fresh")
        await reviewer.wait_for_events({("PendingChangeCreated", fresh)}, within=10)
        assert (await c.decide(b, fresh, "approve")).status_code == 200
        assert (await c.decide(b, waiting, "reject")).status_code == 200
        await reviewer.wait_for_events({("PendingChangeApproved", fresh),
                                        ("PendingChangeRejected", waiting)}, within=10)
        assert await _nothing_more(reviewer) == [
            ("PendingChangeCreated", fresh), ("PendingChangeApproved", fresh),
            ("PendingChangeRejected", waiting)]
        tg.cancel_scope.cancel()


async def test_a_reviewer_who_comes_back_gets_the_current_queue(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, c.instance(**NETS_FAR_AWAY) as a, \
            c.instance(**NETS_FAR_AWAY) as b, anyio.create_task_group() as tg:
        kept, decided = await c.propose(b, "kept"), await c.propose(b, "decided")
        reviewer, pending = await _connected(c, a, tg)
        assert pending == [decided, kept]
        await reviewer.drop()
        # While the reviewer is away, on the other instance.
        assert (await c.decide(b, decided, "approve")).status_code == 200
        new = await c.propose(b, "new")
        back, pending = await _connected(c, a, tg, "back")
        assert pending == [new, kept]
        assert (await c.decide(b, kept, "reject")).status_code == 200
        await back.wait_for_events({("PendingChangeRejected", kept)}, within=10)
        assert await _nothing_more(back) == [("PendingChangeRejected", kept)]
        tg.cancel_scope.cancel()


def _lost(lines: list[str]) -> bool:
    return any("redis backplane connection lost" in line for line in lines)


def _listening_again(lines: list[str]) -> bool:
    lost = next((i for i, line in enumerate(lines)
                 if "redis backplane connection lost" in line), None)
    return lost is not None and any("redis backplane listening" in line
                                    for line in lines[lost:])


async def test_after_a_backplane_outage_the_queue_is_reconciled_from_the_database(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, c.instance(**NETS_FAR_AWAY) as a, \
            c.instance(**NETS_FAR_AWAY) as b, anyio.create_task_group() as tg:
        known = await c.propose(b, "known before the outage")
        reviewer, pending = await _connected(c, a, tg)
        assert pending == [known]
        marks = [a.server.mark(), b.server.mark()]
        c.proxy.cut()
        for x, mark in zip((a, b), marks, strict=True):
            await x.server.wait_for_output(_lost, within=15, since=mark)
        # Proposed and decided on B while nothing crosses: only the rows know.
        missed = await c.propose(b, "proposed during the outage")
        assert (await c.decide(b, known, "reject")).status_code == 200
        c.proxy.restore()
        await reviewer.wait_for_events({("PendingChangeCreated", missed),
                                        ("PendingChangeRejected", known)}, within=20)
        await a.server.wait_for_output(_listening_again, within=15, since=marks[0])
        assert sorted(await _nothing_more(reviewer)) == [
            ("PendingChangeCreated", missed), ("PendingChangeRejected", known)]
        tg.cancel_scope.cancel()


async def test_a_change_proposed_and_decided_while_one_instance_was_cut_off_reaches_its_queue(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c, anyio.create_task_group() as tg:
        # Only A's link to Redis goes through this proxy: B keeps publishing while A is cut.
        own = TcpProxy(*redis_address())
        port = await tg.start(own.run)
        async with c.instance(**NETS_FAR_AWAY,
                              COLAFLOW_REDIS_URL=redis_url_at("127.0.0.1", port, REDIS_URL)
                              ) as a, c.instance(**NETS_FAR_AWAY) as b:
            reviewer, pending = await _connected(c, a, tg)
            assert pending == []
            mark = a.server.mark()
            own.cut()
            await a.server.wait_for_output(_lost, within=15, since=mark)
            # Both messages go out on Redis while A does not listen: neither reaches it.
            unseen = await c.propose(b, "proposed and decided while A was cut off")
            assert (await c.decide(b, unseen, "approve")).status_code == 200
            own.restore()
            # Nothing is pending any more, but the decision was made while A was away.
            await reviewer.wait_for_events({("PendingChangeApproved", unseen)}, within=20)
            assert await _nothing_more(reviewer) == [("PendingChangeApproved", unseen)]
        tg.cancel_scope.cancel()
