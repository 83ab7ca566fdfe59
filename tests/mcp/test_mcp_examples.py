"""The example agents run against a live server and report the reviewer's decision."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from colaflow_mcp.domain import admin
from tests.harness import Harness, fast_settings, live_server
from tests.mcp.nodeproc import ROOT, NodeProcess, require_node_package, run_node, run_process
from tests.mcp.test_mcp_get_stream import through_proxy
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.anyio
EXAMPLES = ROOT / "examples"


async def _approve_when_proposed(h: Harness, proc: NodeProcess, token: str) -> str:
    change_id = (await proc.line_starting("pending change:")).split()[0]
    await proc.line_starting("waiting for a reviewer")
    r = await h.approve(token, change_id)
    assert r.status_code == 200, r.text
    return await proc.line_starting("decision:")


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_python_example_agent_reports_the_approval(server: Harness, era: str) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    argv = [sys.executable, str(EXAMPLES / "mcp_agent.py"), "--url", f"{server.base_url}/mcp",
            "--title", "From the example"]
    if era == "legacy":
        argv.append("--legacy")
    async with run_process(argv, ROOT, {"COLAFLOW_API_KEY": key}) as proc:
        with anyio.fail_after(30):
            decision = await _approve_when_proposed(server, proc, token)
    assert decision.startswith("Approved by alice; executed, issue ")


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_python_example_agent_says_a_refused_key_and_stops(server: Harness, era: str
                                                                ) -> None:
    # A mistyped key, and a key revoked while the agent waits: the server's 401 message,
    # exit status 2, no traceback and no endless reconnecting.
    argv = [sys.executable, str(EXAMPLES / "mcp_agent.py"), "--url", f"{server.base_url}/mcp",
            "--recheck", "1"] + (["--legacy"] if era == "legacy" else [])
    await _refused_then_revoked(server, argv, ROOT)


@pytest.mark.node
async def test_typescript_example_agent_reports_the_approval(server: Harness) -> None:
    node = require_node_package(EXAMPLES, "@modelcontextprotocol/sdk")
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    args = ["--url", f"{server.base_url}/mcp", "--title", "From the TS example"]
    async with run_node(node, EXAMPLES / "mcp_agent.mjs", args, EXAMPLES,
                        {"COLAFLOW_API_KEY": key}) as proc:
        with anyio.fail_after(30):
            decision = await _approve_when_proposed(server, proc, token)
    assert decision.startswith("Approved by alice; executed, issue ")


@pytest.mark.node
async def test_typescript_example_agent_says_a_refused_key_and_stops(server: Harness) -> None:
    # As the Python agent: a mistyped key, and a key revoked while the agent waits, end it
    # with the server's 401 message and exit status 2 -- no stack trace, no endless retries.
    node = require_node_package(EXAMPLES, "@modelcontextprotocol/sdk")
    argv = [node, str(EXAMPLES / "mcp_agent.mjs"), "--url", f"{server.base_url}/mcp",
            "--recheck", "1"]
    await _refused_then_revoked(server, argv, EXAMPLES)


@pytest.mark.node
async def test_typescript_example_agent_says_how_to_run_it() -> None:
    # --help, a mistyped option and a missing key: a usage line and exit 0 / 2 / 2 (as
    # mcp_agent.py's argparse), never node's stack trace.
    node = require_node_package(EXAMPLES, "@modelcontextprotocol/sdk")
    env = {k: v for k, v in os.environ.items() if k != "COLAFLOW_API_KEY"}
    for argv, code in ((["--help"], 0), (["--titel", "x"], 2), (["--url"], 2), ([], 2)):
        with anyio.fail_after(30):
            r = await anyio.run_process([node, str(EXAMPLES / "mcp_agent.mjs"), *argv],
                                        cwd=EXAMPLES, env=env, check=False)
        out, err = r.stdout.decode(), r.stderr.decode()
        assert r.returncode == code, (argv, out, err)
        assert ("usage: node mcp_agent.mjs" in out + err) or "COLAFLOW_API_KEY" in err, argv
        assert "    at " not in err, (argv, err)


async def test_example_agents_say_when_nothing_answers_at_the_url() -> None:
    # The newcomer's first mistake: no server at that address (a port bound, never
    # listening, refuses connections). One line saying so, exit 1, no stack trace.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/mcp"
        runs = [[sys.executable, str(EXAMPLES / "mcp_agent.py"), "--url", url]]
        if (EXAMPLES / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
            runs.append([shutil.which("node") or "node", str(EXAMPLES / "mcp_agent.mjs"),
                         "--url", url])
        for argv in runs:
            with anyio.fail_after(30):
                r = await anyio.run_process(argv, cwd=EXAMPLES, check=False, env={
                    **os.environ, "COLAFLOW_API_KEY": "cola_whatever"})
            out, err = r.stdout.decode(), r.stderr.decode()
            assert r.returncode == 1, (argv[1], out, err)
            assert out.startswith("could not propose: ") and url in out, (argv[1], out)
            assert "Traceback" not in err and "    at " not in err, (argv[1], err)


async def _decided_during_an_outage(h: Harness, proc: NodeProcess, token: str,
                                    proxy: TcpProxy, outage: float) -> str:
    """Cut the agent's network once it waits, decide meanwhile, restore; its decision line."""
    change_id = (await proc.line_starting("pending change:")).split()[0]
    await proc.line_starting("waiting for a reviewer")
    proxy.cut()
    assert (await h.approve(token, change_id)).status_code == 200
    await anyio.sleep(outage)  # the outage itself: longer than the SDK's reconnection rides out
    proxy.restore()
    return await proc.line_starting("decision:")


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_python_example_agent_learns_the_decision_after_its_client_gave_up(
    tmp_path: Path, era: str,
) -> None:
    # Retry hint 2 s: the legacy GET stream tries once after 2 s (refused) and gives up
    # silently; the modern listen stream is lost at once. The agent's fallback (read the
    # change every --recheck s, connect again after a lost connection) still reports it.
    settings = fast_settings(f"sqlite:///{tmp_path / 'examples.db'}", mcp_sse_retry_seconds=2)
    async with live_server(settings) as h, through_proxy(h) as (proxied, proxy):
        await h.project()
        key, token = await h.agent_key(), await h.reviewer_token()
        argv = [sys.executable, str(EXAMPLES / "mcp_agent.py"), "--url",
                f"{proxied.base_url}/mcp", "--recheck", "4"]
        if era == "legacy":
            argv.append("--legacy")
        async with run_process(argv, ROOT, {"COLAFLOW_API_KEY": key}) as proc:
            with anyio.fail_after(40):
                decision = await _decided_during_an_outage(h, proc, token, proxy, 3.0)
    assert decision.startswith("Approved by alice; executed, issue ")


@pytest.mark.node
async def test_typescript_example_agent_learns_the_decision_after_its_client_gave_up(
    tmp_path: Path,
) -> None:
    # Retry hint 2 s: the SDK tries after 2 s and 4 s, then reports that it gave up; the
    # agent then reads the change (again 3 s later while the network is still down).
    node = require_node_package(EXAMPLES, "@modelcontextprotocol/sdk")
    settings = fast_settings(f"sqlite:///{tmp_path / 'examples.db'}", mcp_sse_retry_seconds=2)
    async with live_server(settings) as h, through_proxy(h) as (proxied, proxy):
        await h.project()
        key, token = await h.agent_key(), await h.reviewer_token()
        args = ["--url", f"{proxied.base_url}/mcp", "--title", "From the TS example"]
        async with run_node(node, EXAMPLES / "mcp_agent.mjs", args, EXAMPLES,
                            {"COLAFLOW_API_KEY": key}) as proc:
            with anyio.fail_after(40):
                decision = await _decided_during_an_outage(h, proc, token, proxy, 5.0)
    assert decision.startswith("Approved by alice; executed, issue ")


async def _refused_then_revoked(server: Harness, argv: list[str], cwd: Path) -> None:
    """The agent with a mistyped key, then with a key revoked while it waits: each time
    the server's 401 message on stdout, exit status 2, nothing on stderr."""
    await server.project()
    tenant = await admin.get_or_create_tenant(server.runtime.db, "acme")
    row, key = await admin.create_api_key(server.runtime.db, tenant, "agent")
    refused = ("the server refused the API key: invalid, revoked or expired API key "
               "(COLAFLOW_API_KEY: colaflow-mcp keys create --tenant SLUG prints one)")
    with anyio.fail_after(30):
        wrong = await anyio.run_process(argv, cwd=cwd, check=False,
                                        env={**os.environ, "COLAFLOW_API_KEY": "cola_wrong"})
    out = wrong.stdout.decode()
    assert wrong.returncode == 2 and out.strip() == refused, (out, wrong.stderr.decode())
    assert wrong.stderr == b"", wrong.stderr.decode()
    async with await anyio.open_process(argv, cwd=cwd, env={**os.environ,
                                                             "COLAFLOW_API_KEY": key},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL) as process:
        proc = NodeProcess(process)  # (any process: its stdout lines)
        with anyio.fail_after(30):
            await proc.line_starting("waiting for a reviewer")
            assert await admin.revoke_api_key(server.runtime.db, row.id) is not None
            assert await proc.line_starting("the server refused the API key:") == \
                refused.split(": ", 1)[1]
            assert await process.wait() == 2
