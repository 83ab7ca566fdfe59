"""kill -9 of an instance behind the shipped nginx configuration, and its return.

Every client kind keeps going: @microsoft/signalr on each transport reconnects to the
survivor, the MCP example agents (TypeScript and Python, both eras) start a new session and
read what they missed, the hub examples subscribe again; every decision reaches every
subscriber exactly once. Approvals in flight at the kill get 502 from nginx and are safe to
repeat (409). When the instance returns nothing moves back to it; new connections reach it
again. No secret in any log.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import pytest

from tests.mcp.nodeproc import ROOT, NodeProcess, require_node_package, run_node, run_process
from tests.scale.cluster import server_passes
from tests.scale.fleet import JS, TRANSPORTS, Fleet, fleet, tag_of
from tests.scale.lb import Balanced, balanced
from tests.scale.nginx import access_entries

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis, pytest.mark.node]

EXAMPLES = ROOT / "examples"


@dataclass
class Agent:
    """An example agent: MCP ones wait for the change they proposed, hub ones for theirs."""

    kind: str
    proc: NodeProcess
    on: str  # the instance its session, stream or hub connection is on
    change: str = ""


async def placement(b: Balanced) -> dict[str, tuple[int, int, int]]:
    """Per instance: (legacy MCP sessions subscribed, listen streams, hub subscriptions)."""
    placed = {}
    for tag in b.instances:
        health = await b.health(tag)
        placed[tag] = (health["mcp"]["legacySessionsSubscribed"],
                       health["mcp"]["listenStreams"], health["hub"]["subscriptions"])
    return placed


async def until_one_on_a(b: Balanced, kind: str,
                         start: Callable[[int], Awaitable[tuple[NodeProcess, str]]]
                         ) -> list[Agent]:
    """Start agents of ``kind`` one by one (``start`` returns once it waits) until one
    waits on instance a (new connections are balanced: it takes one or two)."""
    agents: list[Agent] = []
    for n in range(4):
        before = await placement(b)
        proc, change = await start(n)
        after = await placement(b)
        on = next(t for t in after if after[t] != before[t])
        agents.append(Agent(kind, proc, on, change))
        if on == "a":
            return agents
        # New connections take turns over the instances: requests in between (1, 2, 3) so
        # that whatever number an agent makes, one of its tries starts on the other foot.
        for _ in range(n + 1):
            assert (await b.http.get("/health")).status_code == 200
    raise AssertionError(f"no {kind} agent was placed on instance a: {agents}")


async def start_mcp_agents(b: Balanced, stack: AsyncExitStack, kind: str, key: str
                           ) -> list[Agent]:
    """examples/mcp_agent.mjs or .py (legacy or modern era), each proposing a change."""
    url = b.url + "/mcp"

    async def start(n: int) -> tuple[NodeProcess, str]:
        if kind == "typescript":
            node = require_node_package(EXAMPLES, "@modelcontextprotocol/sdk")
            cm = run_node(node, EXAMPLES / "mcp_agent.mjs", ["--url", url, "--title",
                          f"ts {n}"], EXAMPLES, {"COLAFLOW_API_KEY": key})
        else:
            argv = [sys.executable, str(EXAMPLES / "mcp_agent.py"), "--url", url,
                    "--title", f"{kind} {n}"] + (["--legacy"] if kind == "python-legacy" else [])
            cm = run_process(argv, ROOT, {"COLAFLOW_API_KEY": key})
        proc = await stack.enter_async_context(cm)
        with anyio.fail_after(30):
            change = (await proc.line_starting("pending change:")).split()[0]
            await proc.line_starting("waiting for a reviewer")
        return proc, change

    return await until_one_on_a(b, kind, start)


async def start_hub_examples(b: Balanced, stack: AsyncExitStack, kind: str, key: str,
                             changes: list[str]) -> list[Agent]:
    """examples/hub_agent.js or hub_agent_pysignalr.py watching ``changes`` (their
    diagnostics, on stderr, are read along with their results)."""
    env = {"COLAFLOW_URL": b.url, "COLAFLOW_API_KEY": key,
           "NODE_PATH": str(JS / "node_modules")}
    program = ([require_node_package(JS, "@microsoft/signalr"), str(EXAMPLES / "hub_agent.js")]
               if kind == "hub-js" else [sys.executable, str(EXAMPLES / "hub_agent_pysignalr.py")])

    async def start(n: int) -> tuple[NodeProcess, str]:
        argv = ["sh", "-c", 'exec "$0" "$@" 2>&1', *program, *changes]
        proc = await stack.enter_async_context(run_process(argv, ROOT, env))
        with anyio.fail_after(30):
            for _ in changes:
                await proc.line_starting("watching")
        return proc, ""

    return await until_one_on_a(b, kind, start)


async def decisions_of(agent: Agent, count: int) -> list[dict[str, object]]:
    """The next ``count`` decision lines (JSON) of a hub example."""
    found: list[dict[str, object]] = []
    with anyio.fail_after(30):
        while len(found) < count:
            line = await agent.proc.line()
            if line.startswith("{"):
                found.append(json.loads(line))
    return found


async def open_fleet(f: Fleet, keys: list[str]) -> list[str]:
    """Each key on each transport, with the key in a header and in the query string."""
    names = []
    for i, key in enumerate(keys):
        for transport in TRANSPORTS:
            for spelling in ("factory", "query"):
                names.append(name := f"key{i}/{transport}/{spelling}")
                await f.open(name, key, transport, spelling)
    return names


async def approve_until_one_hangs_on_a(b: Balanced, changes: list[str],
                                       answers: dict[str, list[int]],
                                       tg: anyio.abc.TaskGroup) -> None:
    """Approve ``changes`` at once through nginx (retrying as the docs say); return once
    instance a holds one of them (committed, paused by the test hook)."""
    since = b.instances["a"].mark()

    async def approve(change: str) -> None:
        answers[change] = [r.status_code for r in await b.decide_retrying(change)]

    for change in changes:
        tg.start_soon(approve, change)
    await b.instances["a"].wait_for_output(
        lambda lines: any("pausing" in line for line in lines), within=20, since=since)


@pytest.mark.timeout(300)
async def test_instance_killed_and_back_every_client_recovers_and_nothing_moves_back(
    tmp_path: Path,
) -> None:
    # Instance a holds every decision it makes for 60 s after the commit (a test hook): the
    # approvals it takes before the kill are in flight when it dies.
    async with balanced(tmp_path, keys=3, first_start={
            "a": {"COLAFLOW_PAUSE_AFTER_COMMIT_SECONDS": "60"}}) as b, \
            fleet(b.url + "/hubs/mcp") as f, AsyncExitStack() as stack:
        names = await open_fleet(f, b.keys[:2])
        before_kill = {n: tag_of(f.where[n]) for n in names}
        assert set(before_kill.values()) == {"a", "b"}
        phase1 = [await b.propose(f"before the kill {i}") for i in range(4)]
        phase2 = [await b.propose(f"while a is dead {i}") for i in range(2)]
        phase3 = [await b.propose(f"after a is back {i}") for i in range(2)]
        everything = phase1 + phase2 + phase3
        for name in names:
            for change in everything:
                await f.subscribe(name, change)
        watched = [phase1[0], phase2[0], phase3[0]]
        hub_examples = [agent for kind in ("hub-js", "hub-pysignalr")
                        for agent in await start_hub_examples(b, stack, kind, b.keys[2],
                                                              watched)]
        mcp_agents = [agent for kind in ("typescript", "python-legacy", "python-modern")
                      for agent in await start_mcp_agents(b, stack, kind, b.keys[2])]

        answers: dict[str, list[int]] = {}
        async with anyio.create_task_group() as tg:
            await approve_until_one_hangs_on_a(b, phase1, answers, tg)
            # Those on a are announced by b's sweep meanwhile (a holds them after commit).
            await f.until(lambda: all(f.count(n, c) for n in names for c in phase1), 30,
                          "phase 1 delivered")
            await b.kill("a")
        # nginx answered 502 to the approvals a was holding; repeating them was safe.
        in_flight = [c for c, codes in answers.items() if codes[0] == 502]
        assert in_flight, answers
        assert all(answers[c] == [502, 409] for c in in_flight), answers
        assert all(codes == [200] for c, codes in answers.items() if c not in in_flight)

        # While a is dead: decide; every client recovers and learns it.
        for change in [*phase2, *(agent.change for agent in mcp_agents)]:
            assert (await b.decide(change)).status_code == 200
        await f.until(lambda: all(f.count(n, c) for n in names for c in phase1 + phase2),
                      60, "phase 2 delivered")
        for agent in mcp_agents:
            with anyio.fail_after(60):
                decision = await agent.proc.line_starting("decision:")
            assert decision.startswith("Approved by alice"), (agent, decision)
        moved = {n for n, tag in before_kill.items() if tag == "a"}
        assert {n: tag_of(f.where[n]) for n in names} == dict.fromkeys(names, "b")
        for name in names:
            expected = ["connected", "reconnecting", "reconnected"] if name in moved \
                else ["connected"]
            assert f.states[name] == expected, (name, f.states[name])

        async with b.restart("a"):
            states = {n: list(s) for n, s in f.states.items()}
            for change in phase3:
                assert (await b.decide(change, "reject")).status_code == 200
            await f.until(lambda: all(f.count(n, c) for n in names for c in phase3), 30,
                          "phase 3 delivered")
            for example in hub_examples:
                lines = await decisions_of(example, 3)
                assert sorted(str(line["status"]) for line in lines) == [
                    "Approved", "Approved", "Rejected"], (example, lines)
            # Nothing moved back to the returning instance...
            assert {n: list(s) for n, s in f.states.items()} == states
            assert {n: tag_of(f.where[n]) for n in names} == dict.fromkeys(names, "b")
            # ...and new connections reach it again.
            await reaches_a_again(f, b.keys[0])
            await server_passes(*b.instances.values())
        counts = {(n, c): f.count(n, c) for n in names for c in everything}
        assert counts == dict.fromkeys(counts, 1)

    check_logs_after_failover(b, f)


async def reaches_a_again(f: Fleet, key: str) -> None:
    # Open source nginx has no health checks: a server marked failed is tried again by the
    # first new request after fail_timeout (5 s). So new connections are opened as clients
    # would, paced, until one lands on a.
    with anyio.fail_after(30):
        for n in range(60):
            name = f"late{n}"
            await f.open(name, key, "WebSockets", "factory")
            if tag_of(f.where[name]) == "a":
                return
            await anyio.sleep(0.5)


def check_logs_after_failover(b: Balanced, f: Fleet) -> None:
    logs = b.nginx.logs()
    # The failures nginx met are in the upstream-errors log (without query strings)...
    trouble = access_entries(logs["colaflow.upstream-errors.log"])
    assert any(e.uri == "/hubs/mcp" and e.tag == "a" for e in trouble), trouble
    assert any("502" in e.upstream_statuses for e in trouble), trouble
    # ...and none of them, nor anything else of the hub, in the error log.
    assert "/hubs/" not in logs.get("colaflow.error.log", "")
    b.assert_no_secret_logged([*b.keys, b.token, *f.tokens])
