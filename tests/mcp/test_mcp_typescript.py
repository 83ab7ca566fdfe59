"""The official TypeScript SDK (legacy era, like Claude Desktop via mcp-remote) end to end."""

from __future__ import annotations

import uuid

import anyio
import pytest

from tests.harness import Harness
from tests.mcp.nodeproc import ROOT, require_node_package, run_node

pytestmark = [pytest.mark.anyio, pytest.mark.node]

JS = ROOT / "tests" / "js"
SCRIPT = JS / "mcp_interop.mjs"


@pytest.fixture
def node() -> str:
    return require_node_package(JS, "@modelcontextprotocol/sdk")


async def test_typescript_client_learns_of_approval_and_reads_the_result(
    server: Harness, node: str
) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    async with run_node(node, SCRIPT, [f"{server.base_url}/mcp", key, "flow"], JS) as proc:
        with anyio.fail_after(30):
            connected = await proc.expect("connected")
            assert connected["capabilities"]["resources"]["subscribe"] is True
            proposal = (await proc.expect("proposed"))["proposals"][0]
            assert proposal["status"] == "Pending"
            await proc.expect("subscribed")
            r = await server.approve(token, proposal["pendingChangeId"])
            assert r.status_code == 200, r.text
            final = await proc.expect("final")
    assert final["updated"] == [proposal["resourceUri"]]
    assert final["change"]["status"] == "Approved"
    assert final["change"]["executionResult"]["success"] is True
    assert final["change"]["executionResult"]["entityId"]


async def test_typescript_client_learns_of_rejection_with_its_reason(
    server: Harness, node: str
) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    async with run_node(node, SCRIPT, [f"{server.base_url}/mcp", key, "flow"], JS) as proc:
        with anyio.fail_after(30):
            await proc.expect("connected")
            proposal = (await proc.expect("proposed"))["proposals"][0]
            await proc.expect("subscribed")
            r = await server.reject(token, proposal["pendingChangeId"], "duplicate of WEB-1")
            assert r.status_code == 200, r.text
            final = await proc.expect("final")
    assert final["change"]["status"] == "Rejected"
    assert final["change"]["reason"] == "duplicate of WEB-1"


async def test_typescript_client_learns_of_expiry(server: Harness, node: str) -> None:
    await server.project()
    key = await server.agent_key()
    args = [f"{server.base_url}/mcp", key, "flow", "--expires", "0.5"]
    async with run_node(node, SCRIPT, args, JS) as proc:
        with anyio.fail_after(30):
            await proc.expect("connected")
            await proc.expect("proposed")
            await proc.expect("subscribed")
            final = await proc.expect("final")
    assert final["change"]["status"] == "Expired"


async def test_typescript_client_subscribing_after_the_decision_is_told_at_once(
    server: Harness, node: str
) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    args = [f"{server.base_url}/mcp", key, "flow", "--wait-before-subscribe"]
    async with run_node(node, SCRIPT, args, JS) as proc:
        with anyio.fail_after(30):
            await proc.expect("connected")
            proposal = (await proc.expect("proposed"))["proposals"][0]
            r = await server.reject(token, proposal["pendingChangeId"], "too late")
            assert r.status_code == 200, r.text
            await proc.send_line("go")
            await proc.expect("subscribed")
            final = await proc.expect("final")
    assert final["change"]["status"] == "Rejected"


async def test_typescript_client_hears_only_about_the_change_it_subscribed_to(
    server: Harness, node: str
) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    args = [f"{server.base_url}/mcp", key, "flow", "--count", "2"]
    async with run_node(node, SCRIPT, args, JS) as proc:
        with anyio.fail_after(30):
            await proc.expect("connected")
            x, y = (await proc.expect("proposed"))["proposals"]
            await proc.expect("subscribed")
            # Y first: were it delivered, it would arrive before X on the same stream.
            assert (await server.approve(token, y["pendingChangeId"])).status_code == 200
            assert (await server.reject(token, x["pendingChangeId"], "no")).status_code == 200
            final = await proc.expect("final")
    assert final["updated"] == [x["resourceUri"]]


async def test_typescript_client_of_another_tenant_learns_nothing(
    server: Harness, node: str
) -> None:
    await server.project()
    key_a = await server.agent_key("acme")
    key_b = await server.agent_key("globex")
    proposal = await server.propose(key_a)
    theirs = proposal["resourceUri"]
    missing = f"colaflow://pending-changes/{uuid.uuid4()}"
    args = [f"{server.base_url}/mcp", key_b, "probe", theirs, missing]
    async with run_node(node, SCRIPT, args, JS) as proc:
        with anyio.fail_after(30):
            await proc.expect("connected")
            foreign = await proc.expect("probed")
            absent = await proc.expect("probed")
    for op in ("read", "subscribe"):
        assert foreign[op] != "ok" and absent[op] != "ok"
        assert foreign[op]["code"] == absent[op]["code"]
        assert foreign[op]["message"].replace(theirs, "URI") == \
            absent[op]["message"].replace(missing, "URI")
    assert server.runtime.notifier.subscriber_count() == 0
