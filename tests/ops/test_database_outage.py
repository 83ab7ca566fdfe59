"""While PostgreSQL does not answer, REST says so: ``503 {"error": "unavailable"}`` with
``Retry-After``, not a bare ``500 Internal Server Error`` and a traceback per request; and
everything works again once it answers (docs/operations.md, "Readiness"). The hub and MCP
answer 503 too when they cannot check a key, not 401: clients give up on a 401 for good
(``examples/hub_agent_pysignalr.py`` exits), and the key is not at fault."""

from __future__ import annotations

import logging
from collections import Counter

import anyio
import httpx
import mcp_types as types
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.harness import fast_settings, live_server
from tests.mcp.mcpenv import mcp_client
from tests.netproxy import proxied_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]



def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable", r.text
    assert "database" in r.json()["message"]
    assert r.headers["retry-after"] == "1"


async def test_rest_hub_and_mcp_answer_503_while_postgresql_is_unreachable() -> None:
    async with proxied_postgres() as (proxy, proxied):
        settings = fast_settings(proxied, loop_max_backoff_seconds=0.2,
                                 readiness_timeout_seconds=2.0)
        async with live_server(settings) as h:
            await h.project()
            key, token = await h.agent_key(), await h.reviewer_token()
            agent = {"Authorization": f"Bearer {key}"}
            reviewer = {"Authorization": f"Bearer {token}"}
            first = (await h.propose(key))["id"]
            fresh_key = await h.agent_key(name="fresh")
            proxy.cut()
            # Reads, a proposal, and the decision routes (answered ahead of the router).
            assert_unavailable(await h.client.get("/api/mcp/pending-changes",
                                                  headers=reviewer))
            assert_unavailable(await h.client.get(f"/api/mcp/pending-changes/{first}",
                                                  headers=agent))
            assert_unavailable(await h.client.post("/api/mcp/pending-changes", headers=agent,
                                                   json={"tool": "create_issue", "arguments": {
                                                       "project_key": "WEB", "title": "x"}}))
            assert_unavailable(await h.approve(token, first))
            assert_unavailable(await h.reject(token, first))
            # ... as /openapi.json says every REST operation may answer.
            document = (await h.client.get("/openapi.json")).json()
            for path, operations in document["paths"].items():
                if path.startswith("/api/"):
                    for op in operations.values():
                        assert "Retry-After" in op["responses"]["503"]["headers"], path
            # A key this instance has not seen yet: checking it needs the database.
            fresh = {"Authorization": f"Bearer {fresh_key}"}
            for path in ("/hubs/mcp/negotiate?negotiateVersion=1", "/hubs/mcp?id=a.x"):
                r = await h.client.post(path, headers=fresh)
                assert (r.status_code, r.headers["retry-after"]) == (503, "1"), r.text
            ws_url = h.base_url.replace("http", "ws") + "/hubs/mcp"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url, additional_headers=fresh):
                    pass
            assert refused.value.response.status_code == 503
            assert_unavailable(await h.client.post("/mcp", headers={
                **fresh, "Accept": "application/json, text/event-stream"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}}))
            proxy.restore()
            approved = await h.approve(token, first)  # the pool reconnects by itself
            assert approved.status_code == 200, approved.text
            assert approved.json()["status"] == "Approved"
            negotiated = await h.client.post("/hubs/mcp/negotiate?negotiateVersion=1",
                                             headers=fresh)
            assert negotiated.status_code == 200, negotiated.text


async def test_mcp_tools_say_the_database_does_not_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    """An agent's tool call during the outage is a tool error the model can act on (a
    proposal may have been recorded: it says to check before proposing again), not the
    SDK's bare "Error executing tool" with a traceback in the log; afterwards the same
    client proposes again."""
    async with proxied_postgres() as (proxy, proxied):
        # The key checked once and cached (as in production, for 2 s): the call gets past
        # authentication (a key it must look up is a 503, above) and meets the outage.
        settings = fast_settings(proxied, loop_max_backoff_seconds=0.2,
                                 api_key_cache_seconds=600.0)
        async with live_server(settings) as h:
            await h.project()
            key = await h.agent_key()
            async with mcp_client(h, key) as client:
                listed = await client.call_tool("list_projects", {})
                assert not listed.is_error, listed
                proxy.cut()
                caplog.clear()
                proposed = await client.call_tool(
                    "create_issue", {"project_key": "WEB", "title": "During the outage"})
                read = await client.call_tool("list_projects", {})
                proxy.restore()
                again = await client.call_tool(
                    "create_issue", {"project_key": "WEB", "title": "After the outage"})
    texts = [text_of(proposed), text_of(read)]
    assert proposed.is_error and read.is_error, texts
    assert texts[0].startswith("Error executing tool create_issue: the database does not "
                               "answer; try again shortly. "), texts[0]
    assert "check list_pending_changes before proposing it again" in texts[0]
    assert texts[1] == ("Error executing tool list_projects: the database does not answer; "
                        "try again shortly")
    assert not again.is_error, text_of(again)
    assert not [r for r in caplog.records
                if r.exc_info is not None and r.levelno >= logging.ERROR], caplog.records


def text_of(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


async def test_loops_say_once_that_the_database_does_not_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    """One warning per loop and outage, no traceback; each later restart at debug (the
    loops used to log an ERROR with a traceback at every restart: ~1 a second)."""
    caplog.set_level(logging.DEBUG, logger="colaflow_mcp.supervisor")
    watched = ("expiry", "announce-sweep")
    async with proxied_postgres() as (proxy, proxied):
        settings = fast_settings(proxied, loop_max_backoff_seconds=0.2)
        async with live_server(settings) as h:
            supervisor = h.runtime.supervisor
            proxy.cut()
            downs: Counter[str] = Counter()
            with anyio.fail_after(30):
                while min(downs[name] for name in watched) < 3:
                    changed, before = supervisor.alive_changed, dict(supervisor.alive)
                    await changed.wait()
                    downs.update(name for name, alive in supervisor.alive.items()
                                 if before.get(name) and not alive)
            proxy.restore()
    records = [r for r in caplog.records if r.name == "colaflow_mcp.supervisor"]
    assert not [r for r in records if r.levelno >= logging.ERROR], records
    for name in watched:
        mine = [r for r in records if f"background loop {name}:" in r.getMessage()]
        warnings = [r for r in mine if r.levelno == logging.WARNING]
        assert len(warnings) == 1, mine
        assert "the database does not answer" in warnings[0].getMessage()
        assert warnings[0].exc_info is None
        assert len([r for r in mine if r.levelno == logging.DEBUG]) >= 2
