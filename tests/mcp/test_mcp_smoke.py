from __future__ import annotations

import anyio
import pytest

from tests.harness import Harness
from tests.mcp.mcpenv import Updates, mcp_client, propose_issue, read_json, subscribe

pytestmark = pytest.mark.anyio


async def test_legacy_subscriber_is_told_of_approval(server: Harness) -> None:
    await server.project()
    key = await server.agent_key()
    token = await server.reviewer_token()
    updates = Updates()
    async with mcp_client(server, key, "legacy", updates) as client:
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        await subscribe(client, uri)
        r = await server.approve(token, proposal["pendingChangeId"])
        assert r.status_code == 200, r.text
        with anyio.fail_after(10):
            await updates.wait_for(uri)
        data = await read_json(client, uri)
        assert data["status"] == "Approved"
        assert data["executionResult"]["success"] is True


async def test_modern_listener_is_told_of_rejection(server: Harness) -> None:
    await server.project()
    key = await server.agent_key()
    token = await server.reviewer_token()
    async with mcp_client(server, key, "modern") as client:
        assert client.protocol_version == "2026-07-28"
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        async with client.listen(resource_subscriptions=[uri]) as sub:
            assert sub.honored.resource_subscriptions == [uri]
            r = await server.reject(token, proposal["pendingChangeId"], "not now")
            assert r.status_code == 200, r.text
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert event.uri == uri
        data = await read_json(client, uri)
        assert data["status"] == "Rejected"
        assert data["reason"] == "not now"
