"""A revoked key stops hearing anything, even on streams opened before the revocation."""

from __future__ import annotations

import anyio
import pytest

from colaflow_mcp.domain import admin
from tests.harness import Harness
from tests.mcp.mcpenv import mcp_client, propose_issue, subscribe

pytestmark = pytest.mark.anyio


async def _revoke(h: Harness, key: str) -> None:
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None and principal.api_key_id is not None
    assert await admin.revoke_api_key(h.runtime.db, principal.api_key_id) is not None


async def test_revoking_a_key_ends_its_legacy_session_and_subscriptions(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.project()
    key = await server.agent_key()
    endpoint = server.runtime.mcp
    closed = anyio.Event()
    original = endpoint.subscriptions.session_closed

    def session_closed(session_id: str) -> None:
        original(session_id)
        closed.set()

    monkeypatch.setattr(endpoint.subscriptions, "session_closed", session_closed)
    async with mcp_client(server, key, "legacy") as client:
        proposal = await propose_issue(client)
        await subscribe(client, proposal["resourceUri"])
        assert server.runtime.notifier.subscriber_count() == 1
        await _revoke(server, key)
        with anyio.fail_after(10):
            await closed.wait()
        assert server.runtime.notifier.subscriber_count() == 0
        r = await server.client.post("/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                   "method": "tools/list"},
                                     headers={"Authorization": f"Bearer {key}",
                                              "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401


async def test_revoking_a_key_closes_its_listen_streams(server: Harness) -> None:
    await server.project()
    key = await server.agent_key()
    async with mcp_client(server, key, "modern") as client:
        proposal = await propose_issue(client)
        async with client.listen(resource_subscriptions=[proposal["resourceUri"]]) as sub:
            assert server.runtime.notifier.subscriber_count() == 1
            await _revoke(server, key)
            with anyio.fail_after(10):
                events = [event async for event in sub]  # ends with the server's close
        assert events == []
    assert server.runtime.notifier.subscriber_count() == 0
