"""The examples run as documented: a Node agent and a pysignalr agent get their decisions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from hubenv import HubEnv

from tests.mcp.nodeproc import require_node_package

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Lines:
    """Lines of a process stream, read on demand."""

    def __init__(self, stream: ByteReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.lines: list[str] = []
        self._buffer = b""

    async def expect(self, needle: str, count: int = 1, within: float = 15) -> None:
        with anyio.fail_after(within):
            while sum(needle in line for line in self.lines) < count:
                chunk = await self.stream.receive()
                self._buffer += chunk
                *done, self._buffer = self._buffer.split(b"\n")
                self.lines.extend(d.decode() for d in done)

    async def rest(self) -> None:
        try:
            async for chunk in self.stream:
                self._buffer += chunk
        except anyio.EndOfStream:
            pass
        self.lines.extend(d.decode() for d in self._buffer.split(b"\n") if d)
        self._buffer = b""


def agent_env(env: HubEnv, key: str) -> dict[str, str]:
    # No NODE_PATH: the Node example finds its client in examples/node_modules, as it does
    # for a user who ran `npm ci` there (scripts/test does).
    return {**os.environ, "COLAFLOW_URL": env.base, "COLAFLOW_API_KEY": key}


def test_examples_package_json_declares_what_the_examples_import() -> None:
    """`cd examples && npm ci` is all a user runs before any Node example."""
    declared = set(json.loads((EXAMPLES / "package.json").read_text())["dependencies"])
    imported = set()
    for script in [*EXAMPLES.glob("*.js"), *EXAMPLES.glob("*.mjs")]:
        for name in re.findall(r"""(?:require\(|from )["']([^"'.][^"']*)["']""",
                               script.read_text()):
            if not name.startswith("node:"):
                parts = name.split("/")
                imported.add("/".join(parts[:2]) if name.startswith("@") else parts[0])
    assert imported and imported <= declared, imported - declared


async def run_agent(env: HubEnv, command: list[str], key: str, ids: list[str],
                    decide: object) -> list[dict[str, object]]:
    process = await anyio.open_process([*command, *ids], env=agent_env(env, key), cwd=ROOT)
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        await err.expect("watching", count=len(ids))
        await decide()  # type: ignore[operator]
        with anyio.fail_after(15):
            await out.rest()
            code = await process.wait()
        assert code == 0, (out.lines, err.lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return [json.loads(line) for line in out.lines if line.strip()]


async def test_node_example_agent_reports_each_decision(env: HubEnv) -> None:
    require_node_package(EXAMPLES, "@microsoft/signalr")
    t = await env.tenant("acme")
    one, two = await env.propose(t, "one"), await env.propose(t, "two")

    async def decide() -> None:
        await env.approve(t, one)
        await env.reject(t, two, "too big")

    lines = await run_agent(env, ["node", "examples/hub_agent.js"], t.key, [one, two], decide)
    by_id = {line["pendingChangeId"]: line for line in lines}
    assert len(lines) == 2
    assert by_id[one]["executionResult"]["success"] is True  # type: ignore[index]
    assert by_id[two]["reason"] == "too big"


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_node_example_agent_on_a_change_already_decided(env: HubEnv, transport: str
                                                              ) -> None:
    """The decision of a change decided before the agent starts can arrive in the same
    message as the subscription's result (a long poll's response holds both); the agent
    still says what it watches before it reports the decision (stderr and stdout in one
    pipe, in the order written)."""
    require_node_package(EXAMPLES, "@microsoft/signalr")
    t = await env.tenant("acme")
    change = await env.propose(t, "late")
    await env.reject(t, change, "done already")
    process = await anyio.open_process(["node", "examples/hub_agent.js", change],
                                       env={**agent_env(env, t.key),
                                            "COLAFLOW_TRANSPORT": transport},
                                       cwd=ROOT, stderr=subprocess.STDOUT)
    out = Lines(process.stdout)
    try:
        with anyio.fail_after(15):
            await out.rest()
            assert await process.wait() == 0, out.lines
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert len(out.lines) == 2, out.lines
    assert out.lines[0].startswith(f"watching {change} (Rejected)"), out.lines
    assert json.loads(out.lines[1])["reason"] == "done already"


async def test_pysignalr_example_agent_survives_a_server_close(env: HubEnv) -> None:
    t = await env.tenant("acme")
    one, two = await env.propose(t, "one"), await env.propose(t, "two")

    async def decide() -> None:
        await env.approve(t, one)
        for conn in list(env.hub.connections.values()):
            conn.close("maintenance", allow_reconnect=True)
        await env.reject(t, two, "later")  # decided while the agent reconnects

    command = [sys.executable, "examples/hub_agent_pysignalr.py"]
    lines = await run_agent(env, command, t.key, [one, two], decide)
    assert sorted(str(line["status"]) for line in lines) == ["Approved", "Rejected"]
    assert len(lines) == 2


async def test_pysignalr_example_agent_backs_off_afresh_after_each_connection(
        env: HubEnv) -> None:
    # Three unrelated restarts, each after the agent was connected again: each waits the
    # first step (0.5 s), not 1, 2, 4 s as if one outage were going on.
    t = await env.tenant("acme")
    change = await env.propose(t, "one")
    command = [sys.executable, "examples/hub_agent_pysignalr.py", change]
    process = await anyio.open_process(command, env=agent_env(env, t.key), cwd=ROOT)
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        for restart in range(1, 4):
            await err.expect(f"watching {change} (Pending)", count=restart)
            for conn in list(env.hub.connections.values()):
                conn.close("maintenance", allow_reconnect=True)
            await err.expect("reconnecting in", count=restart)
        await err.expect(f"watching {change} (Pending)", count=4)
        await env.approve(t, change)
        with anyio.fail_after(15):
            await out.rest()
            assert await process.wait() == 0, (out.lines, err.lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    waits = [line.rsplit(" ", 1)[-1] for line in err.lines if "reconnecting in" in line]
    assert waits == ["0.5s"] * 3, err.lines


async def test_pysignalr_example_agent_drops_an_id_it_cannot_watch(env: HubEnv) -> None:
    # As the Node agent: an unknown or malformed id is said and dropped (it would otherwise
    # be waited for forever); the others are still reported; the exit status is then 1.
    t = await env.tenant("acme")
    change = await env.propose(t, "one")
    unknown = "00000000-0000-4000-8000-000000000000"
    command = [sys.executable, "examples/hub_agent_pysignalr.py", "not-a-uuid", unknown,
               change]
    process = await anyio.open_process(command, env=agent_env(env, t.key), cwd=ROOT)
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        with anyio.fail_after(20):
            await err.expect(f"watching {change} (Pending)")
            await err.expect("cannot watch not-a-uuid: invalid pendingChangeId")
            await err.expect(f"cannot watch {unknown}: pending change not found")
            await env.approve(t, change)
            await out.rest()
            assert await process.wait() == 1, (out.lines, err.lines)
        lines = [json.loads(line) for line in out.lines if line.strip()]
        assert [(line["pendingChangeId"], line["status"]) for line in lines] == [
            (change, "Approved")]
        for only_bad in (["not-a-uuid"], [unknown]):  # nothing left to wait for: at once
            with anyio.fail_after(20):
                alone = await anyio.run_process([*command[:2], *only_bad],
                                                env=agent_env(env, t.key), cwd=ROOT,
                                                check=False)
            assert alone.returncode == 1 and b"cannot watch" in alone.stderr, alone
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_pysignalr_example_agent_stops_when_the_key_is_refused(env: HubEnv) -> None:
    # A mistyped key, or one revoked while the agent waits, is refused on every reconnect:
    # the agent says so and exits 2 instead of retrying forever.
    t = await env.tenant("acme")
    change = await env.propose(t, "one")
    command = [sys.executable, "examples/hub_agent_pysignalr.py", change]
    refused = "the hub refused the API key (401: invalid, revoked or expired)"
    wrong = await anyio.open_process(command, env=agent_env(env, "cola_wrong"), cwd=ROOT)
    revoked = await anyio.open_process(command, env=agent_env(env, t.key), cwd=ROOT)
    try:
        with anyio.fail_after(20):
            err = Lines(wrong.stderr)
            await err.expect(refused)
            assert await wrong.wait() == 2, err.lines
            err = Lines(revoked.stderr)
            await err.expect(f"watching {change} (Pending)")
            await env.revoke(t)  # the hub closes the connection; reconnecting gets 401
            await err.expect(refused)
            assert await revoked.wait() == 2, err.lines
    finally:
        for process in (wrong, revoked):
            if process.returncode is None:
                process.kill()
                await process.wait()
