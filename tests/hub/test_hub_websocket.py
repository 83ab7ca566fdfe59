"""Raw WebSocket protocol tests against a real server."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import anyio
import httpx
import pytest
from hubenv import HubEnv, ServerFactory
from hubwire import HANDSHAKE, RS, msg, open_ws
from websockets.exceptions import InvalidStatus

from colaflow_mcp.hub.connection import HubConnection

pytestmark = pytest.mark.anyio


async def test_subscribe_returns_snapshot_then_approved_event(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    ws = await open_ws(env.ws_url, t.key)
    done = await ws.invoke("SubscribeToPendingChange", cid)
    assert done["result"]["pendingChangeId"] == cid
    assert done["result"]["status"] == "Pending"
    await env.approve(t, cid)
    event = await ws.next()
    assert event["type"] == 1 and event["target"] == "PendingChangeApproved"
    assert "invocationId" not in event
    payload = event["arguments"][0]
    assert payload["pendingChangeId"] == cid
    assert payload["executionResult"]["success"] is True
    assert payload["executionResult"]["entityId"]


async def test_already_decided_change_is_pushed_after_the_completion(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    await env.reject(t, cid, "not now")
    ws = await open_ws(env.ws_url, t.key)
    await ws.send(msg({"type": 1, "invocationId": "7", "target": "SubscribeToPendingChange",
                       "arguments": [cid]}))
    first, second = await ws.next(), await ws.next()
    assert first["type"] == 3 and first["result"]["status"] == "Rejected"
    assert second["target"] == "PendingChangeRejected"
    assert second["arguments"][0]["reason"] == "not now"


async def test_bearer_header_is_accepted_like_the_query_parameter(env: HubEnv) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key, header=True)
    done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    assert done == {"type": 3, "invocationId": "1"}


async def test_missing_or_wrong_key_is_401_before_upgrade(env: HubEnv) -> None:
    for key in (None, "cola_" + "x" * 43, "garbage"):
        with pytest.raises(InvalidStatus) as info:
            await open_ws(env.ws_url, key, handshake=False)
        assert info.value.response.status_code == 401


async def test_unknown_connection_id_is_404(env: HubEnv) -> None:
    t = await env.tenant("acme")
    with pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, t.key, query="id=nope", handshake=False)
    assert info.value.response.status_code == 404


async def test_second_websocket_for_one_connection_is_409(env: HubEnv) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1",
                            headers={"Authorization": f"Bearer {t.key}"})
    token = r.json()["connectionToken"]
    first = await open_ws(env.ws_url, t.key, query=f"id={token}")
    with pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, t.key, query=f"id={token}", handshake=False)
    assert info.value.response.status_code == 409
    done = await first.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    assert "error" not in done


async def test_another_tenants_key_cannot_use_a_connection_token(env: HubEnv) -> None:
    a, b = await env.tenant("acme"), await env.tenant("bolt")
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1",
                            headers={"Authorization": f"Bearer {a.key}"})
    token = r.json()["connectionToken"]
    with pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, b.key, query=f"id={token}", handshake=False)
    assert info.value.response.status_code == 404


async def test_messagepack_handshake_is_refused_in_the_response(env: HubEnv) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key, handshake=False)
    await ws.send(json.dumps({"protocol": "messagepack", "version": 1}) + RS)
    answer = await ws.next()
    assert "messagepack" in answer["error"]
    await ws.closed_code()


@pytest.mark.parametrize("first", ['{"protocol":"json"}', "not json", '{"type":1}', "[]"])
async def test_bad_handshake_gets_an_error_and_the_server_goes_on(
    env: HubEnv, first: str
) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key, handshake=False)
    await ws.send(first + RS)
    answer = await ws.next()
    assert "error" in answer
    await ws.closed_code()
    other = await open_ws(env.ws_url, t.key)
    assert "error" not in await other.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))


async def test_handshake_split_across_frames_and_batched_messages_work(env: HubEnv) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key, handshake=False)
    await ws.send(HANDSHAKE[:10])
    await ws.send(HANDSHAKE[10:] + msg({"type": 6}) + msg(
        {"type": 1, "invocationId": "a", "target": "Nope", "arguments": []}))
    assert await ws.next() == {}
    done = await ws.next()
    assert done == {"type": 3, "invocationId": "a", "error": "Unknown hub method 'Nope'"}


async def test_garbage_frame_closes_only_that_connection(env: HubEnv) -> None:
    t = await env.tenant("acme")
    bystander = await open_ws(env.ws_url, t.key)
    ws = await open_ws(env.ws_url, t.key)
    await ws.send("{{{ not json" + RS)
    close = await ws.next()
    assert close["type"] == 7 and "error" in close
    await ws.closed_code()
    done = await bystander.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    assert "error" not in done


async def test_oversize_message_closes_with_1009_and_others_keep_working(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_max_message_bytes=1024) as env:
        t = await env.tenant("acme")
        bystander = await open_ws(env.ws_url, t.key)
        ws = await open_ws(env.ws_url, t.key)
        await ws.send(msg({"type": 1, "target": "X", "arguments": ["y" * 2000]}))
        close = await ws.next()
        assert close["type"] == 7 and "maximum size" in close["error"]
        assert await ws.closed_code() == 1009
        done = await bystander.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
        assert "error" not in done


async def test_unknown_target_and_wrong_argument_count_get_completion_errors(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key)
    assert (await ws.invoke("DropTables"))["error"] == "Unknown hub method 'DropTables'"
    done = await ws.invoke("SubscribeToPendingChange", "a", "b", invocation_id="2")
    assert done["error"] == "Invocation provides 2 argument(s) but target expects 1."
    done = await ws.invoke("SubscribeToPendingChange", invocation_id="3")
    assert "0 argument(s)" in done["error"]
    # Non-blocking invocations get no answer at all, even when they fail.
    await ws.send(msg({"type": 1, "target": "DropTables", "arguments": []}))
    done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()), invocation_id="4")
    assert done == {"type": 3, "invocationId": "4"}


async def test_malformed_unknown_and_foreign_ids(env: HubEnv) -> None:
    a, b = await env.tenant("acme"), await env.tenant("bolt")
    foreign = await env.propose(b)
    ws = await open_ws(env.ws_url, a.key)
    bad = await ws.invoke("SubscribeToPendingChange", "not-a-uuid")
    assert bad["error"] == "invalid pendingChangeId: must be a UUID"
    bad = await ws.invoke("SubscribeToPendingChange", 42, invocation_id="2")
    assert bad["error"] == "invalid pendingChangeId: must be a UUID"
    unknown = await ws.invoke("SubscribeToPendingChange", str(uuid.uuid4()), invocation_id="3")
    other = await ws.invoke("SubscribeToPendingChange", foreign, invocation_id="4")
    assert unknown["error"] == other["error"] == "pending change not found"


async def test_streaming_is_refused_with_a_completion_error(env: HubEnv) -> None:
    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key)
    await ws.send(msg({"type": 4, "invocationId": "s1", "target": "SubscribeToPendingChange",
                       "arguments": []}))
    assert "Streaming is not supported" in (await ws.next())["error"]
    await ws.send(msg({"type": 1, "invocationId": "s2", "target": "SubscribeToPendingChange",
                       "arguments": [], "streamIds": ["1"]}))
    assert "streaming is not supported" in (await ws.next())["error"]
    await ws.send(msg({"type": 5, "invocationId": "s1"}))  # cancel: ignored
    done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()), invocation_id="9")
    assert "error" not in done


async def test_subscription_cap_per_connection(server_factory: ServerFactory) -> None:
    async with server_factory(hub_max_subscriptions_per_connection=2) as env:
        t = await env.tenant("acme")
        ids = [await env.propose(t, title=f"t{i}") for i in range(3)]
        ws = await open_ws(env.ws_url, t.key)
        for i, cid in enumerate(ids[:2]):
            assert "error" not in await ws.invoke("SubscribeToPendingChange", cid,
                                                  invocation_id=str(i))
        capped = await ws.invoke("SubscribeToPendingChange", ids[2], invocation_id="x")
        assert "subscription limit" in capped["error"]
        await ws.invoke("UnsubscribeFromPendingChange", ids[0], invocation_id="u")
        assert "error" not in await ws.invoke("SubscribeToPendingChange", ids[2],
                                              invocation_id="y")


async def test_keep_alive_ping_and_client_timeout(server_factory: ServerFactory) -> None:
    async with server_factory(hub_keep_alive_seconds=0.1, hub_client_timeout_seconds=0.6) as env:
        t = await env.tenant("acme")
        ws = await open_ws(env.ws_url, t.key)
        ping = await ws.next(skip_pings=False)
        assert ping == {"type": 6}
        # Silent client: closed with an error after the client timeout.
        close = await ws.drain_until(lambda m: m.get("type") == 7, within=5)
        assert "timeout" in close["error"]
        await ws.closed_code()


async def test_handshake_timeout_closes_the_socket(server_factory: ServerFactory) -> None:
    async with server_factory(hub_handshake_timeout_seconds=0.2) as env:
        t = await env.tenant("acme")
        ws = await open_ws(env.ws_url, t.key, handshake=False)
        answer = await ws.next()
        assert "handshake" in answer["error"]
        await ws.closed_code()


async def test_revoked_key_connections_are_closed_and_others_stay(env: HubEnv) -> None:
    t, other = await env.tenant("acme"), await env.tenant("bolt")
    ws, ws2 = await open_ws(env.ws_url, t.key), await open_ws(env.ws_url, t.key)
    keep = await open_ws(env.ws_url, other.key)
    await env.revoke(t)
    for sock in (ws, ws2):
        close = await sock.drain_until(lambda m: m.get("type") == 7, within=5)
        assert "revoked" in close["error"] and not close.get("allowReconnect")
        await sock.closed_code()
    assert "error" not in await keep.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    with pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, t.key, handshake=False)
    assert info.value.response.status_code == 401


async def test_a_reviewer_connection_is_closed_when_its_token_expires(env: HubEnv) -> None:
    from colaflow_mcp.store.tables import Tenant as TenantRow

    t = await env.tenant("acme")
    async with env.runtime.db.read() as s:
        row = await s.get(TenantRow, t.id)
    assert row is not None
    # exp is whole seconds: 3 s from now leaves at least 2 s to connect with it.
    short = env.runtime.tokens.issue(row, "rita", ttl_seconds=3)
    lasting = await open_ws(env.ws_url, t.token)
    ws = await open_ws(env.ws_url, short)
    assert "error" not in await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
    close = await ws.drain_until(lambda m: m.get("type") == 7, within=8)
    assert "expired" in close["error"] and close.get("allowReconnect") is True
    await ws.closed_code()
    assert "error" not in await lasting.invoke("UnsubscribeFromPendingChange",
                                               str(uuid.uuid4()))
    with pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, short, handshake=False)
    assert info.value.response.status_code == 401


async def test_stalled_client_is_closed_when_its_queue_overflows(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_outbound_queue_size=4) as env:
        t = await env.tenant("acme")
        ws = await open_ws(env.ws_url, t.key)
        conn = next(iter(c for c in env.hub.connections.values() if not c.closed))
        # Push more than the socket's buffers and then the queue hold, in one go (the
        # client cannot read meanwhile): a frame is written as it is queued while the
        # transport takes it; once the buffers are full the writer waits and the queue
        # fills up.
        pad = "x" * 16_000
        for _ in range(2_000):  # ~32 MB: more than loopback's buffers hold
            conn.send(msg({"type": 6, "pad": pad}))
            if conn.closed:
                break
        assert conn.closed and "more than 4 messages queued" in (conn.close_error or "")
        close = await ws.drain_until(lambda m: m.get("type") == 7)
        assert close["allowReconnect"] is True
        await ws.closed_code()


async def test_shutdown_sends_close_with_allow_reconnect(server_factory: ServerFactory) -> None:
    async with server_factory() as env:
        t = await env.tenant("acme")
        ws = await open_ws(env.ws_url, t.key)
        await env.hub.shutdown()
        close = await ws.drain_until(lambda m: m.get("type") == 7)
        assert close["allowReconnect"] is True


async def test_tenants_never_receive_each_others_events(env: HubEnv) -> None:
    a, b = await env.tenant("acme"), await env.tenant("bolt")
    ca, cb = await env.propose(a), await env.propose(b)
    wa, wb = await open_ws(env.ws_url, a.key), await open_ws(env.ws_url, b.key)
    await wa.invoke("SubscribeToPendingChange", ca)
    await wb.invoke("SubscribeToPendingChange", cb)
    assert "error" in await wa.invoke("SubscribeToPendingChange", cb, invocation_id="2")
    await env.reject(b, cb, "b only")
    await env.approve(a, ca)
    ea, eb = await wa.next(), await wb.next()
    assert ea["arguments"][0]["pendingChangeId"] == ca
    assert eb["arguments"][0]["pendingChangeId"] == cb
    # Events are queued synchronously at decision time: a round trip shows nothing else.
    for ws in (wa, wb):
        assert "error" not in await ws.invoke("UnsubscribeFromPendingChange", ca,
                                              invocation_id="z")
        assert ws.pending == []


async def test_skip_negotiation_sockets_are_independent_connections(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    one, two = await open_ws(env.ws_url, t.key), await open_ws(env.ws_url, t.key)
    live = [c for c in env.hub.connections.values() if not c.closed]
    assert len(live) == 2 and live[0].connection_id != live[1].connection_id
    assert (await one.invoke("SubscribeToPendingChange", cid))["result"]["status"] == "Pending"
    [conn_one] = [c for c in live if c.subscriptions == {cid}]
    await env.approve(t, cid)
    assert (await one.next())["target"] == "PendingChangeApproved"
    # The other socket of the same key subscribed to nothing and hears nothing: its
    # round trip comes back with no event before it.
    assert "error" not in await two.invoke("UnsubscribeFromPendingChange", cid)
    assert two.pending == []
    # Closing one leaves the other working.
    await one.ws.close()
    with anyio.fail_after(5):
        await conn_one.closed_event.wait()
    assert "error" not in await two.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()),
                                           invocation_id="2")


async def test_stateful_reconnect_replays_unacked_and_supersedes_a_half_open_socket(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{env.hub_url}/negotiate?negotiateVersion=1&useStatefulReconnect=true",
            headers={"Authorization": f"Bearer {t.key}"})
    assert r.json()["useStatefulReconnect"] is True
    token = r.json()["connectionToken"]
    old = await open_ws(env.ws_url, t.key, query=f"id={token}", handshake=False)
    await old.send(json.dumps({"protocol": "json", "version": 2}) + RS)
    assert await old.next() == {}
    done = await old.invoke("SubscribeToPendingChange", cid)  # client seq 1, server seq 1
    assert done["result"]["status"] == "Pending"
    # The old socket still looks alive to the server; the client comes back anyway.
    new = await open_ws(env.ws_url, t.key, query=f"id={token}", handshake=False)
    assert await new.next() == {"type": 9, "sequenceId": 1}
    replayed = await new.next()
    assert replayed["type"] == 3 and replayed["invocationId"] == "1"
    await old.closed_code()
    await new.send(msg({"type": 9, "sequenceId": 1}))
    # A replay of the client's first message is ignored; the next one is processed.
    await new.send(msg({"type": 1, "invocationId": "1", "target": "SubscribeToPendingChange",
                        "arguments": [cid]}))
    await new.send(msg({"type": 8, "sequenceId": 1}))
    done = await new.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()),
                            invocation_id="2")
    assert done == {"type": 3, "invocationId": "2"}
    assert not [m for m in new.pending if m.get("invocationId") == "1"]
    await env.approve(t, cid)
    event = await new.drain_until(lambda m: m.get("type") == 1)
    assert event["target"] == "PendingChangeApproved"
    [conn] = [c for c in env.hub.connections.values() if not c.closed]
    assert conn.stateful and conn.ws_generation == 2


async def test_status_counts_connections_by_state_and_transport(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    ws = await open_ws(env.ws_url, t.key)
    await ws.invoke("SubscribeToPendingChange", cid)
    status = env.hub.status()
    assert status["connections"] == {"connected": 1}
    assert status["transports"] == {"WebSockets": 1}
    assert status["subscriptions"] == 1 and status["closing"] is False


async def test_reviewer_token_may_watch_its_tenants_changes(env: HubEnv) -> None:
    t, other = await env.tenant("acme"), await env.tenant("bolt")
    cid, foreign = await env.propose(t), await env.propose(other)
    ws = await open_ws(env.ws_url, t.token, header=True)
    assert (await ws.invoke("SubscribeToPendingChange", cid))["result"]["status"] == "Pending"
    refused = await ws.invoke("SubscribeToPendingChange", foreign, invocation_id="2")
    assert refused["error"] == "pending change not found"
    await env.approve(t, cid)
    assert (await ws.next())["target"] == "PendingChangeApproved"


async def test_connections_of_an_expired_key_are_closed(env: HubEnv) -> None:
    from datetime import timedelta

    from sqlalchemy import update
    from sqlmodel import col

    from colaflow_mcp.store.tables import ApiKey, utcnow

    t = await env.tenant("acme")
    ws = await open_ws(env.ws_url, t.key)
    async with env.runtime.db.write() as s:
        await s.exec(update(ApiKey).where(col(ApiKey.id) == t.key_id)  # type: ignore[call-overload]
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    close = await ws.drain_until(lambda m: m.get("type") == 7, within=5)
    assert "revoked" in close["error"]


def expire_reviewer_tokens(env: HubEnv) -> list[HubConnection]:
    """Make every live reviewer connection's token look expired (its ``exp`` has passed)."""
    conns = [c for c in env.hub.connections.values()
             if c.principal.kind == "reviewer" and not c.closed]
    for conn in conns:
        conn.principal = dataclasses.replace(conn.principal, token_expires=time.time() - 1)
    return conns


async def test_one_revocation_pass_closes_a_revoked_key_as_reviewer_tokens_expire(
    server_factory: ServerFactory,
) -> None:
    # The background pass is far away: this test runs the pass itself, once.
    async with server_factory(revocation_check_interval_seconds=3600) as env:
        t = await env.tenant("acme")
        reviewers = [await open_ws(env.ws_url, t.token) for _ in range(3)]
        agent = await open_ws(env.ws_url, t.key)
        await env.revoke(t)
        expired = expire_reviewer_tokens(env)
        assert len(expired) == 3
        await env.runtime.revocation_pass()  # closing the expired ones must not end the pass
        close = await agent.drain_until(lambda m: m.get("type") == 7)
        assert "revoked" in close["error"]
        for ws in reviewers:
            close = await ws.drain_until(lambda m: m.get("type") == 7)
            assert "expired" in close["error"] and close["allowReconnect"] is True


async def test_a_revoked_key_is_closed_within_the_interval_while_tokens_expire(
    server_factory: ServerFactory,
) -> None:
    interval = 0.25
    async with server_factory(revocation_check_interval_seconds=interval) as env:
        t = await env.tenant("acme")
        for _ in range(12):
            await open_ws(env.ws_url, t.token)
        agent = await open_ws(env.ws_url, t.key)
        await env.revoke(t)
        expire_reviewer_tokens(env)
        # The next pass closes all of them (slack: three more intervals). A pass that ended
        # at the first connection it closed needed one pass per reviewer: 13 intervals.
        close = await agent.drain_until(lambda m: m.get("type") == 7, within=4 * interval)
        assert "revoked" in close["error"]


async def test_the_snapshot_says_who_and_why_and_the_event_says_edited(env: HubEnv) -> None:
    t = await env.tenant("acme")
    agent = dataclasses.replace(t.agent, key_name="test")
    change = await env.runtime.changes.propose(
        agent, "create_issue", {"project_key": "WEB", "title": "Fix logn"},
        rationale="Login is broken for everyone.")
    ws = await open_ws(env.ws_url, t.key)
    snapshot = (await ws.invoke("SubscribeToPendingChange", change.id))["result"]
    assert snapshot["proposedBy"] == {"keyId": t.key_id, "keyName": "test"}
    assert snapshot["rationale"] == "Login is broken for everyone."
    assert snapshot["proposedArguments"] == snapshot["arguments"]
    assert snapshot["edited"] is False and snapshot["editedBy"] is None
    await env.runtime.changes.approve(t.reviewer, change.id,
                                      {"project_key": "WEB", "title": "Fix login"})
    event = await ws.next()
    assert event["target"] == "PendingChangeApproved"
    payload = event["arguments"][0]
    assert payload["edited"] is True and payload["approvedBy"] == "rita"
    assert payload["arguments"]["title"] == "Fix login"
    assert payload["executionResult"]["success"] is True
