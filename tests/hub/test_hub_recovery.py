"""The safety nets on their own: with the fast path cut, the announce sweep and the
reconcile loop still deliver a decision to a waiting hub client, once.

Every other test runs with both nets far away (tests/harness.py ``SAFETY_NETS_FAR_AWAY``),
so there the fast path alone must deliver; here each net is on and the other far away.
"""

from __future__ import annotations

import uuid

import pytest
from hubenv import HubEnv, ServerFactory, Tenant
from hubwire import RawWs, open_ws
from sqlalchemy import update
from sqlmodel import col

from colaflow_mcp.store.tables import PendingChange, Status, utcnow
from tests.harness import SAFETY_NETS_FAR_AWAY, SAFETY_NETS_ON, recovery_passes

pytestmark = pytest.mark.anyio

SWEEP_ONLY = {**SAFETY_NETS_ON,
              "reconcile_interval_seconds": SAFETY_NETS_FAR_AWAY["reconcile_interval_seconds"]}
RECONCILE_ONLY = {**SAFETY_NETS_ON, "announce_sweep_interval_seconds":
                  SAFETY_NETS_FAR_AWAY["announce_sweep_interval_seconds"]}


async def _waiting_client(env: HubEnv) -> tuple[Tenant, str, RawWs]:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    ws = await open_ws(env.ws_url, t.key)
    done = await ws.invoke("SubscribeToPendingChange", cid)
    assert done["result"]["status"] == "Pending"
    return t, cid, ws


async def _decide_without_announcing(env: HubEnv, t: Tenant, cid: str) -> None:
    """Commit a rejection the way an instance that dies right after its commit does:
    the row is decided, nothing is dispatched or published."""
    # The same conditional UPDATE a decision runs (a private step of ChangeService).
    change = await env.runtime.changes._decide(t.id, cid, Status.REJECTED, "rita", "gone")
    assert change is not None


async def _exactly_one_event(env: HubEnv, ws: RawWs, cid: str, net: str
                             ) -> dict[str, object]:
    event = await ws.next(within=10)
    assert event["target"] == "PendingChangeRejected"
    payload: dict[str, object] = event["arguments"][0]
    assert payload["pendingChangeId"] == cid and payload["reason"] == "gone"
    # Later passes find nothing more to deliver: a round trip shows no second event.
    await recovery_passes(env.runtime, loops=(net,))
    done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()), invocation_id="z")
    assert "error" not in done
    assert ws.pending == []
    return payload


async def test_the_announce_sweep_delivers_a_decision_that_was_never_announced(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(**SWEEP_ONLY) as env:
        t, cid, ws = await _waiting_client(env)
        await _decide_without_announcing(env, t, cid)
        await _exactly_one_event(env, ws, cid, "announce-sweep")
        async with env.runtime.db.read() as s:
            row = await s.get(PendingChange, cid)
        assert row is not None and row.announced_at is not None  # the sweep claimed it


async def test_the_reconcile_loop_delivers_a_decision_whose_announcement_never_came(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(**RECONCILE_ONLY) as env:
        t, cid, ws = await _waiting_client(env)
        await _decide_without_announcing(env, t, cid)
        # Announced elsewhere (another instance published it) but the message never came
        # here — a backplane outage: the sweep has nothing to do, the reconcile loop must.
        async with env.runtime.db.write() as s:
            await s.exec(update(PendingChange)  # type: ignore[call-overload]
                         .where(col(PendingChange.id) == cid).values(announced_at=utcnow()))
        await _exactly_one_event(env, ws, cid, "reconcile")
