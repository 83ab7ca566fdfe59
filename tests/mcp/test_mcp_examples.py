"""The example agents run against a live server and report the reviewer's decision."""

from __future__ import annotations

import sys

import anyio
import pytest

from tests.harness import Harness
from tests.mcp.nodeproc import ROOT, NodeProcess, require_node_package, run_node, run_process

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
