"""The review queue on the hub: a reviewer's connection gets its tenant's pending changes,
then every creation and decision, each once (WebSockets here; the official client on all
three transports in test_hub_js_client.py, across instances in tests/scale)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hubenv import HubEnv, ServerFactory, Tenant
from hubwire import RawWs, open_ws

from colaflow_mcp.hub.methods import REVIEWERS_ONLY
from colaflow_mcp.store.tables import PendingChange, Status, utcnow
from colaflow_mcp.store.tables import Tenant as TenantRow
from tests.harness import SAFETY_NETS_FAR_AWAY, SAFETY_NETS_ON, recovery_passes

pytestmark = pytest.mark.anyio

RECONCILE_ONLY = {**SAFETY_NETS_ON, "announce_sweep_interval_seconds":
                  SAFETY_NETS_FAR_AWAY["announce_sweep_interval_seconds"]}


async def _queue(env: HubEnv, t: Tenant) -> tuple[RawWs, list[dict[str, Any]]]:
    ws = await open_ws(env.ws_url, t.token)
    done = await ws.invoke("SubscribeToReviewQueue")
    assert "error" not in done, done
    pending: list[dict[str, Any]] = done["result"]["pending"]
    return ws, pending


async def _rest(env: HubEnv, t: Tenant, cid: str) -> dict[str, Any]:
    r = await env.harness.client.get(f"/api/mcp/pending-changes/{cid}",
                                     headers={"Authorization": f"Bearer {t.token}"})
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


async def _events_until_round_trip(ws: RawWs) -> list[tuple[str, str]]:
    """(target, change id) of every event before a round trip's completion: what the
    connection had been sent so far, nothing later."""
    done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()),
                           invocation_id=uuid.uuid4().hex)
    assert "error" not in done
    events = [(m["target"], m["arguments"][0]["pendingChangeId"]) for m in ws.pending]
    ws.pending.clear()
    return events


async def test_a_reviewer_gets_the_queue_then_each_creation_and_decision_of_its_tenant(
    env: HubEnv,
) -> None:
    acme, bolt = await env.tenant("acme"), await env.tenant("bolt")
    older = [await env.propose(acme, f"old {i}") for i in range(3)]
    await env.approve(acme, older[0])
    await env.propose(bolt, "foreign")
    ws, pending = await _queue(env, acme)
    # The tenant's pending changes, newest first, each the change JSON REST shows.
    assert [c["id"] for c in pending] == [older[2], older[1]]
    assert pending[0] == await _rest(env, acme, older[2])

    fresh = await env.propose(acme, "new one")
    created = await ws.next()
    assert created["target"] == "PendingChangeCreated"
    assert created["arguments"] == [await _rest(env, acme, fresh)]
    await env.propose(bolt, "another tenant's")
    await env.approve(acme, fresh)
    await env.reject(acme, older[1], "not now")
    await env.expire_now(older[2])
    assert await _events_until_round_trip(ws) == [
        ("PendingChangeApproved", fresh), ("PendingChangeRejected", older[1]),
        ("PendingChangeExpired", older[2])]


async def test_an_agent_key_cannot_subscribe_to_the_review_queue(env: HubEnv) -> None:
    t = await env.tenant("acme")
    await env.propose(t)
    ws = await open_ws(env.ws_url, t.key)
    for method in ("SubscribeToReviewQueue", "UnsubscribeFromReviewQueue"):
        done = await ws.invoke(method, invocation_id=method)
        assert done["error"] == REVIEWERS_ONLY and "result" not in done
    await env.propose(t, "after the refusal")
    assert await _events_until_round_trip(ws) == []
    assert env.runtime.notifier.queue_subscriber_count() == 0


async def test_the_snapshot_holds_the_newest_pending_changes_up_to_the_queue_size(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(review_queue_size=3) as env:
        t = await env.tenant("acme")
        ids = [await env.propose(t, f"change {i}") for i in range(5)]
        await env.reject(t, ids[4], "no")
        _, pending = await _queue(env, t)
        assert [c["id"] for c in pending] == [ids[3], ids[2], ids[1]]
        assert {c["status"] for c in pending} == {"Pending"}


async def test_unsubscribing_ends_the_queue_events(env: HubEnv) -> None:
    t = await env.tenant("acme")
    ws, _ = await _queue(env, t)
    first = await env.propose(t, "seen")
    assert (await ws.next())["arguments"][0]["id"] == first
    assert "error" not in await ws.invoke("UnsubscribeFromReviewQueue", invocation_id="u")
    await env.propose(t, "unseen")
    await env.approve(t, first)
    assert await _events_until_round_trip(ws) == []
    assert env.runtime.notifier.queue_subscriber_count() == 0


async def test_a_reviewer_who_reconnects_and_subscribes_again_gets_the_current_queue(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    kept, decided = await env.propose(t, "kept"), await env.propose(t, "decided")
    ws, pending = await _queue(env, t)
    assert [c["id"] for c in pending] == [decided, kept]
    await ws.ws.close()
    # While the reviewer is away.
    await env.approve(t, decided)
    new = await env.propose(t, "new")
    again, pending = await _queue(env, t)
    assert [(c["id"], c["status"]) for c in pending] == [(new, "Pending"), (kept, "Pending")]
    await env.reject(t, kept, "stale")
    assert await _events_until_round_trip(again) == [("PendingChangeRejected", kept)]


async def _insert_unannounced(env: HubEnv, t: Tenant, title: str) -> str:
    """A pending change committed by another instance whose announcement never came."""
    now = utcnow()
    change = PendingChange(
        tenant_id=t.id, api_key_id=t.key_id, tool_name="create_issue", operation="create",
        entity_type="issue", arguments={"project_key": "WEB", "title": title},
        diff={"before": None, "after": {"title": title}, "changedFields": []},
        summary=f"Create issue in WEB: {title}", created_at=now,
        expires_at=now + timedelta(hours=1))
    async with env.runtime.db.write() as s:
        s.add(change)
    return change.id


async def test_reconcile_delivers_what_the_queue_missed_once(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(**RECONCILE_ONLY) as env:
        t = await env.tenant("acme")
        known = await env.propose(t, "known")
        ws, _ = await _queue(env, t)
        # Neither the creation nor the decision is announced: only the rows tell.
        missed = await _insert_unannounced(env, t, "missed")
        assert await env.runtime.changes._decide(t.id, known, Status.REJECTED, "rita", "gone")
        first = await ws.next(within=10)
        second = await ws.next(within=10)
        got = {m["target"]: m["arguments"][0] for m in (first, second)}
        assert got["PendingChangeCreated"] == await _rest(env, t, missed)
        assert got["PendingChangeRejected"]["pendingChangeId"] == known
        await recovery_passes(env.runtime, loops=("reconcile",))
        assert await _events_until_round_trip(ws) == []


async def test_each_creation_and_decision_arrives_once_with_the_safety_nets_on(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(**SAFETY_NETS_ON) as env:
        t = await env.tenant("acme")
        ws, _ = await _queue(env, t)
        ids = [await env.propose(t, f"change {i}") for i in range(4)]
        await env.approve(t, ids[0])
        await env.reject(t, ids[1], "no")
        await env.expire_now(ids[2])
        await recovery_passes(env.runtime)
        events = await _events_until_round_trip(ws)
        assert sorted(events) == sorted(
            [("PendingChangeCreated", cid) for cid in ids]
            + [("PendingChangeApproved", ids[0]), ("PendingChangeRejected", ids[1]),
               ("PendingChangeExpired", ids[2])])


async def test_a_queue_connection_is_closed_when_the_reviewer_token_expires(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    async with env.runtime.db.read() as s:
        row = await s.get(TenantRow, t.id)
    assert row is not None
    # exp is whole seconds: 3 s from now leaves at least 2 s to connect with it.
    short = env.runtime.tokens.issue(row, "rita", ttl_seconds=3)
    ws = await open_ws(env.ws_url, short)
    assert "error" not in await ws.invoke("SubscribeToReviewQueue")
    close = await ws.drain_until(lambda m: m.get("type") == 7, within=8)
    assert "expired" in close["error"] and close.get("allowReconnect") is True
    await ws.closed_code()
    assert env.runtime.notifier.queue_subscriber_count() == 0
