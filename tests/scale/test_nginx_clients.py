"""Real clients through the shipped nginx configuration: every hub transport with the key in
a header or in the query string, browser-style WebSockets, the MCP TypeScript SDK. Each
connection or session keeps to the instance that created it, whatever key it uses, one key's
connections spread over both instances, and no secret reaches a log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

from tests.mcp.nodeproc import require_node_package, run_node
from tests.scale.agents import HubAgent
from tests.scale.cluster import server_passes
from tests.scale.fleet import JS, TRANSPORTS, BrowserStyleAgent, Fleet, fleet, tag_of
from tests.scale.lb import Balanced, balanced
from tests.scale.nginx import access_entries

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis, pytest.mark.node]


async def websockets_per_instance(b: Balanced) -> dict[str, int]:
    """Open hub WebSockets on each instance (its /health)."""
    return {tag: (await b.health(tag))["hub"]["transports"].get("WebSockets", 0)
            for tag in b.instances}


def assert_routed_by_tag(b: Balanced, path: str) -> Counter[str]:
    """Every tagged request under ``path`` went to its tag's instance and none got 404;
    returns how many requests each tag had."""
    entries = [e for e in access_entries(b.nginx.logs()["colaflow.access.log"])
               if e.uri.startswith(path)]
    assert entries, f"no {path} requests logged"
    tags: Counter[str] = Counter()
    for e in entries:
        assert e.status != 404, e
        if e.tag:
            tags[e.tag] += 1
            assert e.upstreams == [f"127.0.0.1:{b.ports[e.tag]}"], e
    return tags


@pytest.mark.timeout(300)
async def test_hub_connections_keep_their_instance_whatever_the_transport_and_spelling(
    tmp_path: Path,
) -> None:
    async with balanced(tmp_path, keys=4) as b, fleet(b.url + "/hubs/mcp") as f, \
            anyio.create_task_group() as tg:
        names = []
        for i, key in enumerate(b.keys):
            for transport in TRANSPORTS:
                for spelling in ("factory", "query"):
                    names.append(name := f"key{i}/{transport}/{spelling}")
                    await f.open(name, key, transport, spelling)
        browsers = [BrowserStyleAgent(f"browser{i}") for i in range(2)]
        for browser, key in zip(browsers, b.keys, strict=False):
            await browser.connect_negotiated(b.url, key, tg)
        # One key's connections spread over both instances (negotiate is balanced).
        for i in range(len(b.keys)):
            mine = {tag_of(f.where[n]) for n in names if n.startswith(f"key{i}/")}
            assert mine == {"a", "b"}, (i, f.where)
        assert {tag_of(browser.token) for browser in browsers} == {"a", "b"}
        # WebSockets without negotiate (no id, no tag) are balanced too.
        before = await websockets_per_instance(b)
        skipping = [HubAgent(f"skip{i}") for i in range(2)]
        for agent, key in zip(skipping, b.keys, strict=False):
            await agent.connect(b.url.replace("http://", "ws://") + "/hubs/mcp", key, tg)
        after = await websockets_per_instance(b)
        assert {t: after[t] - before[t] for t in after} == {"a": 1, "b": 1}
        agents = [*browsers, *skipping]

        changes = [await b.propose(f"change {i}", key) for i, key in enumerate(b.keys)]
        for name in names:
            for change in changes:
                await f.subscribe(name, change)
        for agent in agents:
            for change in changes:
                assert "error" not in await agent.subscribe(change)
        for i, change in enumerate(changes):
            r = await b.decide(change, "approve" if i % 2 else "reject")
            assert r.status_code == 200, r.text

        await f.until(lambda: all(f.count(n, c) for n in names for c in changes), 30,
                      "every connection got every decision")
        for agent in agents:
            await agent.wait_for(set(changes), within=30)
        await server_passes(*b.instances.values())
        assert {(n, c): f.count(n, c) for n in names for c in changes} == dict.fromkeys(
            ((n, c) for n in names for c in changes), 1)
        for agent in agents:
            assert dict(agent.events) == dict.fromkeys(changes, 1)
        # No connection was lost or sent to the wrong instance on the way.
        assert not f.errors
        assert all(states == ["connected"] for states in f.states.values()), f.states
        tags = assert_routed_by_tag(b, "/hubs/mcp")
        assert tags["a"] and tags["b"]

        tg.cancel_scope.cancel()
    b.assert_no_secret_logged([*b.keys, b.token, *f.tokens,
                               *(browser.token for browser in browsers)])


@pytest.mark.timeout(300)
async def test_stateful_reconnect_resumes_on_the_instance_holding_the_connection(
    tmp_path: Path,
) -> None:
    # A dropped WebSocket with stateful reconnect comes back with the same id: the tag
    # sends it to the instance that still holds the connection, which replays what the
    # client missed; the application sees nothing.
    async with balanced(tmp_path, keys=2) as b:
        async with fleet(b.url + "/hubs/mcp") as f:
            await stateful_round(b, f)
        # Each connection opened its socket twice (by negotiate's id), both times on its own
        # instance; nginx logs a WebSocket when it ends.
        sockets = [e for e in access_entries(b.nginx.logs()["colaflow.access.log"])
                   if e.method == "GET" and e.uri == "/hubs/mcp" and e.status == 101]
        assert len(sockets) == 8 and all(e.tag for e in sockets), sockets
        assert_routed_by_tag(b, "/hubs/mcp")
    b.assert_no_secret_logged([*b.keys, b.token, *f.tokens])


async def stateful_round(b: Balanced, f: Fleet) -> None:
    """Four stateful connections get a decision, lose their sockets, get another one."""
    names = [f"stateful{i}" for i in range(4)]
    for i, name in enumerate(names):
        await f.open(name, b.keys[i % 2], "WebSockets", "factory", stateful=True)
    assert {tag_of(f.where[n]) for n in names} == {"a", "b"}
    first, second = await b.propose("one"), await b.propose("two")
    for name in names:
        await f.subscribe(name, first)
        await f.subscribe(name, second)
    assert (await b.decide(first)).status_code == 200
    await f.until(lambda: all(f.count(n, first) for n in names), 20, "first delivered")
    for name in names:
        await f.drop(name)
    assert (await b.decide(second, "reject")).status_code == 200
    await f.until(lambda: all(f.count(n, second) for n in names), 20, "second delivered")
    await server_passes(*b.instances.values())
    assert all(f.count(n, c) == 1 for n in names for c in (first, second))
    assert all(states == ["connected"] for states in f.states.values()), f.states
    assert not f.errors


@pytest.mark.timeout(300)
async def test_typescript_mcp_sessions_keep_their_instance(tmp_path: Path) -> None:
    node = require_node_package(JS, "@modelcontextprotocol/sdk")
    sessions = 6

    async def one_session(key: str, number: int) -> None:
        async with run_node(node, JS / "mcp_interop.mjs", [b.url + "/mcp", key, "flow"],
                            JS) as proc:
            with anyio.fail_after(60):
                await proc.expect("connected")
                proposed = await proc.expect("proposed")
                await proc.expect("subscribed")
                change = proposed["proposals"][0]["pendingChangeId"]
                assert (await b.decide(change)).status_code == 200
                final = await proc.expect("final")
        assert final["change"]["status"] == "Approved", number
        assert final["updated"] == [proposed["proposals"][0]["resourceUri"]]

    async with balanced(tmp_path, keys=2) as b:
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(one_session, b.keys[i % 2], i)
        tags = assert_routed_by_tag(b, "/mcp")
        assert tags["a"] and tags["b"]  # sessions on both instances
    b.assert_no_secret_logged([*b.keys, b.token])
