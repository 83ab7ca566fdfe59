"""Decisions reach MCP subscribers on both eras, only their own, at once, and are cleaned up.

``legacy``: the Python SDK client with ``mode="legacy"`` (initialize, GET stream,
``resources/subscribe``). ``modern``: its default, 2026-07-28 ``subscriptions/listen``.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.harness import Harness
from tests.mcp.mcpenv import (
    Mode,
    Updates,
    mcp_client,
    propose_issue,
    read_json,
    subscribe,
    watching,
)

pytestmark = pytest.mark.anyio
MODES = pytest.mark.parametrize("mode", ["legacy", "modern"])


async def _setup(h: Harness, tenant: str = "acme") -> tuple[str, str]:
    await h.project(tenant)
    return await h.agent_key(tenant), await h.reviewer_token(tenant)


@MODES
async def test_approval_notifies_that_uri_and_the_result_is_readable(
    server: Harness, mode: Mode
) -> None:
    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        async with watching(client, mode, updates, [uri]) as honored:
            assert honored == [uri]
            r = await server.approve(token, proposal["pendingChangeId"])
            assert r.status_code == 200, r.text
            with anyio.fail_after(10):
                await updates.wait_for(uri)
        assert updates.uris == [uri]
        change = await read_json(client, uri)
    assert change["status"] == "Approved"
    assert change["decidedBy"] == "alice"
    assert change["executionResult"]["success"] is True
    assert change["executionResult"]["entityId"]


@MODES
async def test_rejection_notifies_and_the_reason_is_readable(server: Harness, mode: Mode
                                                            ) -> None:
    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        async with watching(client, mode, updates, [uri]):
            r = await server.reject(token, proposal["pendingChangeId"], "we already have one")
            assert r.status_code == 200, r.text
            with anyio.fail_after(10):
                await updates.wait_for(uri)
        change = await read_json(client, uri)
        tool = await client.call_tool("get_pending_change",
                                      {"pending_change_id": proposal["pendingChangeId"]})
    assert change["status"] == "Rejected"
    assert change["reason"] == "we already have one"
    assert tool.structured_content is not None
    assert tool.structured_content["reason"] == "we already have one"


@MODES
async def test_expiry_notifies(server: Harness, mode: Mode) -> None:
    key, _ = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        proposal = await propose_issue(client, expires_in_seconds=0.5)
        uri = proposal["resourceUri"]
        async with watching(client, mode, updates, [uri]):
            with anyio.fail_after(10):
                await updates.wait_for(uri)
        change = await read_json(client, uri)
    assert change["status"] == "Expired"


@MODES
async def test_failed_execution_is_reported_in_the_final_state(server: Harness, mode: Mode
                                                               ) -> None:
    key, token = await _setup(server)
    created = await server.propose(key)
    assert (await server.approve(token, created["id"])).status_code == 200
    issue_key = "WEB-1"
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        move = await client.call_tool("update_status", {"issue_key": issue_key,
                                                        "status": "Done"})
        assert move.structured_content is not None
        delete = await server.propose(key, "delete_issue", {"issue_key": issue_key})
        assert (await server.approve(token, delete["id"])).status_code == 200
        uri = move.structured_content["resourceUri"]
        async with watching(client, mode, updates, [uri]):
            r = await server.approve(token, move.structured_content["pendingChangeId"])
            assert r.status_code == 200, r.text
            with anyio.fail_after(10):
                await updates.wait_for(uri)
        change = await read_json(client, uri)
    assert change["status"] == "Approved"
    assert change["executionResult"]["success"] is False
    assert "no longer exists" in change["executionResult"]["error"]


@MODES
async def test_a_subscriber_to_x_hears_nothing_about_y(server: Harness, mode: Mode) -> None:
    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        x = await propose_issue(client, "X")
        y = await propose_issue(client, "Y")
        async with watching(client, mode, updates, [x["resourceUri"]]):
            # Y is decided first: had it been sent, it would precede X on the stream.
            assert (await server.approve(token, y["pendingChangeId"])).status_code == 200
            assert (await server.reject(token, x["pendingChangeId"], "no")).status_code == 200
            with anyio.fail_after(10):
                await updates.wait_for(x["resourceUri"])
    assert updates.uris == [x["resourceUri"]]


@MODES
async def test_subscribing_after_the_decision_is_told_at_once(server: Harness, mode: Mode
                                                              ) -> None:
    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, mode, updates) as client:
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        assert (await server.approve(token, proposal["pendingChangeId"])).status_code == 200
        async with watching(client, mode, updates, [uri]) as honored:
            assert honored == [uri]
            with anyio.fail_after(10):
                await updates.wait_for(uri)
    assert updates.uris == [uri]


async def test_another_tenant_cannot_read_or_subscribe_and_learns_nothing(server: Harness
                                                                          ) -> None:
    key_a, _ = await _setup(server, "acme")
    key_b = await server.agent_key("globex")
    theirs = (await server.propose(key_a))["resourceUri"]
    missing = f"colaflow://pending-changes/{uuid.uuid4()}"
    errors: dict[str, list[tuple[int, str]]] = {}
    async with mcp_client(server, key_b, "legacy") as client:
        for uri in (theirs, missing):
            got = errors.setdefault(uri, [])
            for op in (read_json, subscribe):
                with pytest.raises(MCPError) as info:
                    await op(client, uri)
                got.append((info.value.code, info.value.message.replace(uri, "URI")))
        tool = await client.call_tool("get_pending_change",
                                      {"pending_change_id": theirs.rsplit("/", 1)[1]})
        assert tool.is_error
    assert errors[theirs] == errors[missing]
    assert server.runtime.notifier.subscriber_count() == 0


async def test_another_tenant_cannot_listen_and_learns_nothing(server: Harness) -> None:
    key_a, token_a = await _setup(server, "acme")
    key_b = await server.agent_key("globex")
    proposal = await server.propose(key_a)
    theirs = proposal["resourceUri"]
    missing = f"colaflow://pending-changes/{uuid.uuid4()}"
    updates = Updates()
    async with mcp_client(server, key_b, "modern", updates) as client:
        mine = await propose_issue_in_new_project(server, client)
        async with watching(client, "modern", updates, [theirs, missing, mine]) as honored:
            # Theirs and a missing one are treated alike: neither is honored.
            assert honored == [mine]
            assert (await server.approve(token_a, proposal["id"])).status_code == 200
            token_b = await server.reviewer_token("globex")
            assert (await server.reject(token_b, mine.rsplit("/", 1)[1], "no")).status_code \
                == 200
            with anyio.fail_after(10):
                await updates.wait_for(mine)
        with pytest.raises(MCPError):
            await read_json(client, theirs)
    assert updates.uris == [mine]


async def propose_issue_in_new_project(h: Harness, client: Any) -> str:
    await h.project("globex", "OPS", "Operations")
    result = await client.call_tool("create_issue", {"project_key": "OPS", "title": "t"})
    assert not result.is_error, result.content
    uri: str = result.structured_content["resourceUri"]
    return uri


@MODES
async def test_a_hundred_sessions_each_get_their_own_update(server: Harness, mode: Mode
                                                            ) -> None:
    key, token = await _setup(server)
    sessions = 100
    ready = 0
    all_ready = anyio.Event()
    proposals: dict[int, dict[str, Any]] = {}
    heard: dict[int, list[str]] = {}

    async def agent(i: int) -> None:
        nonlocal ready
        updates = Updates()
        async with mcp_client(server, key, mode, updates) as client:
            proposals[i] = await propose_issue(client, f"issue {i}")
            uri = proposals[i]["resourceUri"]
            async with watching(client, mode, updates, [uri]):
                ready += 1
                if ready == sessions:
                    all_ready.set()
                await updates.wait_for(uri)
        heard[i] = updates.uris

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(agent, i)
            await all_ready.wait()
            assert server.runtime.notifier.subscriber_count() == sessions
            for i in range(sessions):
                r = await server.approve(token, proposals[i]["pendingChangeId"])
                assert r.status_code == 200, r.text
    assert heard == {i: [proposals[i]["resourceUri"]] for i in range(sessions)}


async def test_legacy_subscriptions_are_dropped_when_the_session_ends(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await _setup(server)
    endpoint = server.runtime.mcp
    closed = anyio.Event()
    original = endpoint.subscriptions.session_closed

    def session_closed(session_id: str) -> None:
        original(session_id)
        closed.set()

    monkeypatch.setattr(endpoint.subscriptions, "session_closed", session_closed)
    async with mcp_client(server, key, "legacy") as client:
        a = await propose_issue(client, "a")
        b = await propose_issue(client, "b")
        await subscribe(client, a["resourceUri"])
        await subscribe(client, b["resourceUri"])
        assert server.runtime.notifier.subscriber_count() == 2
        assert len(endpoint.subscriptions.sessions) == 1
    with anyio.fail_after(10):
        await closed.wait()
    assert server.runtime.notifier.subscriber_count() == 0
    assert endpoint.subscriptions.sessions == {}


async def test_legacy_unsubscribe_stops_updates(server: Harness) -> None:
    from tests.mcp.mcpenv import unsubscribe

    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, "legacy", updates) as client:
        a = await propose_issue(client, "a")
        b = await propose_issue(client, "b")
        await subscribe(client, a["resourceUri"])
        await subscribe(client, b["resourceUri"])
        await unsubscribe(client, a["resourceUri"])
        assert (await server.approve(token, a["pendingChangeId"])).status_code == 200
        assert (await server.approve(token, b["pendingChangeId"])).status_code == 200
        with anyio.fail_after(10):
            await updates.wait_for(b["resourceUri"])
    assert updates.uris == [b["resourceUri"]]


async def test_listen_subscriptions_are_dropped_when_the_stream_ends(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await _setup(server)
    notifier = server.runtime.notifier
    released = anyio.Event()
    original = notifier.unregister_all

    def unregister_all(subscriber: Any, change_ids: Any) -> None:
        original(subscriber, change_ids)
        released.set()

    monkeypatch.setattr(notifier, "unregister_all", unregister_all)
    updates = Updates()
    async with mcp_client(server, key, "modern", updates) as client:
        proposal = await propose_issue(client)
        async with watching(client, "modern", updates, [proposal["resourceUri"]]):
            assert notifier.subscriber_count() == 1
        with anyio.fail_after(10):
            await released.wait()
    assert notifier.subscriber_count() == 0


async def test_subscribing_again_to_a_decided_change_reports_it_again(server: Harness) -> None:
    key, token = await _setup(server)
    updates = Updates()
    async with mcp_client(server, key, "legacy", updates) as client:
        proposal = await propose_issue(client)
        uri = proposal["resourceUri"]
        await subscribe(client, uri)
        assert (await server.approve(token, proposal["pendingChangeId"])).status_code == 200
        with anyio.fail_after(10):
            await updates.wait_for(uri)
            await subscribe(client, uri)
            while updates.uris.count(uri) < 2:
                await updates.wait_for_more()
    assert updates.uris == [uri, uri]
    assert server.runtime.notifier.subscriber_count() <= 1


async def test_subscribing_to_something_else_says_what_can_be_subscribed(server: Harness
                                                                         ) -> None:
    key, _ = await _setup(server)
    async with mcp_client(server, key, "legacy") as client:
        with pytest.raises(MCPError) as projects:
            await subscribe(client, "colaflow://projects")
        with pytest.raises(MCPError) as malformed:
            await subscribe(client, "colaflow://pending-changes/not-a-uuid")
    assert "Only colaflow://pending-changes/{id} can be subscribed" in projects.value.message
    assert malformed.value.message == "Resource not found: colaflow://pending-changes/not-a-uuid"
    assert server.runtime.mcp.subscriptions.sessions == {}
