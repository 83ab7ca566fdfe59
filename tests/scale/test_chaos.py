"""1,000 changes, two instances, randomized subscribe / decide / reconnect / expire timing:
zero lost, zero duplicates per subscriber, zero double decisions; and a reviewer on each
instance's review queue gets every decision once and each creation at most once, before
its decision."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import anyio
import anyio.abc
import pytest

from tests.scale.agents import HubAgent, QueueReviewer
from tests.scale.cluster import Cluster, Remote, cluster, recovery_passes

pytestmark = pytest.mark.anyio

CHANGES = int(os.environ.get("COLAFLOW_CHAOS_CHANGES", "1000"))
AGENTS = 8
SEED = int(os.environ.get("COLAFLOW_CHAOS_SEED", "20261125"))


class Agent:
    """A logical agent: survives its connections, resubscribes to what it still waits for."""

    def __init__(self, name: str, c: Cluster, rng: random.Random) -> None:
        self.name = name
        self.c = c
        self.rng = rng
        self.wanted: set[str] = set()
        self.events: Counter[str] = Counter()
        self.hub: HubAgent | None = None
        self.lock = anyio.Lock()
        self.reconnects = 0

    def received(self) -> set[str]:
        return set(self.events)

    def _merge(self) -> None:
        if self.hub is not None:
            for cid, n in self.hub.events.items():
                self.events[cid] += n
            self.hub.events.clear()

    async def connect(self, tg: anyio.abc.TaskGroup) -> None:
        async with self.lock:
            self._merge()
            if self.hub is not None:
                await self.hub.drop()
            hub = HubAgent(self.name)
            target: Remote = self.rng.choice(self.c.instances)
            await hub.connect(target.hub_url, self.c.key, tg)
            self.hub = hub
            for cid in sorted(self.wanted - self.received()):
                done = await hub.subscribe(cid)
                assert "error" not in done, done

    async def want(self, cid: str) -> None:
        async with self.lock:
            self.wanted.add(cid)
            assert self.hub is not None
            try:
                done = await self.hub.subscribe(cid)
            except ConnectionError:
                return  # resubscribed on the next connect
            assert "error" not in done, done

    def totals(self) -> Counter[str]:
        self._merge()
        return self.events


@pytest.mark.timeout(600)  # ~40 s on an idle 2-core machine; bounded inside by fail_after
async def test_thousand_changes_with_random_timing_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with cluster(tmp_path) as c, c.instance() as a, c.instance() as b, \
            anyio.create_task_group() as tg:
        agents = [Agent(f"agent-{i}", c, random.Random(rng.random())) for i in range(AGENTS)]
        for agent in agents:
            await agent.connect(tg)
        reviewers = [QueueReviewer("reviewer-a"), QueueReviewer("reviewer-b")]
        for reviewer, via in zip(reviewers, (a, b), strict=True):
            await reviewer.connect(via.hub_url, c.token, tg)
            assert await reviewer.subscribe_queue() == []
        owners: dict[str, list[Agent]] = {}
        double_decisions: list[tuple[str, list[int]]] = []
        expiring: set[str] = set()
        limiter = anyio.CapacityLimiter(8)
        counts: Counter[str] = Counter()

        async def one_change(i: int) -> None:
            async with limiter:
                via = rng.choice([a, b])
                expires = rng.uniform(0.5, 3.0) if rng.random() < 0.2 else None
                cid = await c.propose(via, f"chaos {i}", expires_in=expires)
                subs = [rng.choice(agents)]
                if rng.random() < 0.3:
                    subs.append(rng.choice([x for x in agents if x is not subs[0]]))
                owners[cid] = subs
                late = rng.random() < 0.3  # some subscribe only after the decision
                if not late:
                    for agent in subs:
                        await agent.want(cid)
                if expires is not None:
                    expiring.add(cid)
                elif rng.random() < 0.1:
                    results: list[int] = []

                    async def race(via: Remote, how: str) -> None:
                        results.append((await c.decide(via, cid, how)).status_code)

                    async with anyio.create_task_group() as race_tg:
                        race_tg.start_soon(race, a, "approve")
                        race_tg.start_soon(race, b, "reject")
                    double_decisions.append((cid, sorted(results)))
                else:
                    r = await c.decide(rng.choice([a, b]), cid,
                                       "approve" if rng.random() < 0.6 else "reject")
                    assert r.status_code == 200, r.text
                if late:
                    for agent in subs:
                        await agent.want(cid)
                counts["done"] += 1

        monkey_done = anyio.Event()

        async def chaos_monkey(stop: anyio.Event) -> None:
            try:
                while not stop.is_set():
                    with anyio.move_on_after(rng.uniform(0.2, 0.6)):
                        await stop.wait()
                    if stop.is_set():
                        break
                    victim = rng.choice(agents)
                    await victim.connect(tg)
                    victim.reconnects += 1
            finally:
                monkey_done.set()

        async def redis_cutter(stop: anyio.Event) -> None:
            while not stop.is_set():
                with anyio.move_on_after(rng.uniform(1.5, 3.0)):
                    await stop.wait()
                c.proxy.cut()
                counts["redisOutages"] += 1
                with anyio.move_on_after(rng.uniform(0.3, 1.0)):
                    await stop.wait()
                c.proxy.restore()

        stop = anyio.Event()
        tg.start_soon(chaos_monkey, stop)
        tg.start_soon(redis_cutter, stop)
        with anyio.fail_after(300):
            async with anyio.create_task_group() as work:
                for i in range(CHANGES):
                    work.start_soon(one_change, i)
        stop.set()
        with anyio.fail_after(30):
            await monkey_done.wait()  # no reconnect may race the final collection
        c.proxy.restore()

        # Every agent receives every change it waits for (expiries included).
        for agent in agents:
            while agent.wanted - agent.received():
                assert agent.hub is not None
                missing = agent.wanted - agent.received()
                try:
                    await agent.hub.wait_for(missing, within=30)
                except ConnectionError:
                    # Like withAutomaticReconnect: reconnect and resubscribe.
                    await agent.connect(tg)
                    agent.reconnects += 1
                except TimeoutError:
                    still = sorted(agent.wanted - agent.received() - set(agent.hub.events))
                    states = {cid: await c.status(cid) for cid in still[:10]}
                    health = [(await x.client.get("/health")).json() for x in (a, b)]
                    pytest.fail(f"{agent.name} never got {len(still)} decision(s): {states}; "
                                f"connected to {agent.hub.url}; health {health}")
                agent.totals()
        # Each reviewer hears of every decision. (A change proposed and decided while a
        # message was lost may reach a queue as its decision alone.)
        outcomes = {cid: _decided_event(await c.status(cid)) for cid in owners}
        for reviewer in reviewers:
            await reviewer.wait_for_events({(e, cid) for cid, e in outcomes.items()},
                                           within=30)
        # Absence of duplicates is observed over a window in which sweeps and reconciles run.
        await recovery_passes(a, b)
        for reviewer in reviewers:
            # A round trip: everything sent before it has arrived.
            assert "error" not in await reviewer.invoke("UnsubscribeFromReviewQueue")
            seen = Counter(reviewer.seen)
            assert [k for k, n in seen.items() if n > 1] == [], reviewer.name
            created = {cid for kind, cid in seen if kind == "PendingChangeCreated"}
            decided = {cid for kind, cid in seen if kind != "PendingChangeCreated"}
            assert created <= decided == set(owners), reviewer.name
            for cid in created:  # told of it before its decision
                kinds = [kind for kind, x in reviewer.seen if x == cid]
                assert kinds[0] == "PendingChangeCreated", (reviewer.name, kinds)
            counts[f"{reviewer.name}Created"] = len(created)
            counts[f"{reviewer.name}Decided"] = len(decided)

        lost = sum(len(ag.wanted - set(ag.totals())) for ag in agents)
        duplicates = sum(n - 1 for ag in agents for n in ag.totals().values() if n > 1)
        deliveries = sum(sum(ag.totals().values()) for ag in agents)
        statuses: Counter[str] = Counter()
        for cid in owners:
            statuses[await c.status(cid)] += 1
        bad_races = [(cid, r) for cid, r in double_decisions if r != [200, 409]]
        report = {
            "seed": SEED, "changes": len(owners), "subscriptions": sum(len(v) for v in
                                                                       owners.values()),
            "deliveries": deliveries, "lost": lost, "duplicates": duplicates,
            "doubleDecisionRaces": len(double_decisions), "doubleDecisions": len(bad_races),
            "reconnects": sum(ag.reconnects for ag in agents),
            "redisOutages": counts["redisOutages"], "statuses": dict(statuses),
            "reviewers": {k: v for k, v in counts.items() if k.startswith("reviewer")},
        }
        print("chaos report:", json.dumps(report))
        assert len(owners) == CHANGES
        assert statuses["Pending"] == 0
        assert statuses["Expired"] == len(expiring)
        assert lost == 0 and duplicates == 0, report
        assert bad_races == [], report
        tg.cancel_scope.cancel()


def _decided_event(status: str) -> str:
    return {"Approved": "PendingChangeApproved", "Rejected": "PendingChangeRejected",
            "Expired": "PendingChangeExpired"}[status]
