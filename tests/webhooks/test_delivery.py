"""Webhooks end to end, in process, on SQLite and PostgreSQL: a real receiver on a socket
verifies every delivery with the ``standardwebhooks`` library."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from colaflow_mcp.domain import admin, webhooks
from colaflow_mcp.store.tables import WebhookEndpoint
from tests.harness import Harness, fast_settings, in_process
from tests.webhooks.receiver import Receiver, receiver

pytestmark = pytest.mark.anyio

# Retries close together; no polling (poll far away): what arrives came by the doorbell
# rung after commit, or by a retry time the sender planned.
WEBHOOKS_FAST: dict[str, Any] = {
    "webhook_allow_private_networks": True,
    "webhook_retry_schedule": "0,0.05,0.05",
    "webhook_poll_interval_seconds": 3600.0,
    "webhook_endpoint_backoff_seconds": 0.01,
    "webhook_endpoint_max_backoff_seconds": 0.05,
    "webhook_timeout_seconds": 5.0,
}


@asynccontextmanager
async def app(url: str, **overrides: Any) -> AsyncIterator[Harness]:
    async with in_process(fast_settings(url, **{**WEBHOOKS_FAST, **overrides})) as h:
        await h.project()
        yield h


async def add(h: Harness, r: Receiver, path: str, tenant: str = "acme",
              events: object = None) -> WebhookEndpoint:
    t = await admin.get_or_create_tenant(h.runtime.db, tenant)
    ep = await webhooks.add_endpoint(h.runtime.db, t, r.url(path), events, allow_private=True)
    r.secrets[path] = ep.secret
    return ep


async def settled(h: Harness, ep: WebhookEndpoint, count: int, within: float = 15.0
                  ) -> list[dict[str, Any]]:
    """The endpoint's deliveries once ``count`` exist and none is pending or in flight."""
    sender = h.runtime.webhooks
    with anyio.fail_after(within):
        while True:
            wake = sender.attempt_recorded
            items = await webhooks.deliveries(h.runtime.db, ep)
            if len(items) >= count and all(d["state"] in ("succeeded", "failed")
                                           for d in items):
                return items
            await wake.wait()


def types(r: Receiver, path: str) -> list[str]:
    return sorted(x.payload["type"] for x in r.at(path))


async def test_every_event_is_delivered_signed_once_each(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        ep = await add(h, r, "/all")
        key, token = await h.agent_key(), await h.reviewer_token()
        approved = await h.propose(key)
        rejected = await h.propose(key)
        expiring = await h.propose(key, expires_in_seconds=0.3)
        assert (await h.approve(token, approved["id"])).status_code == 200
        assert (await h.reject(token, rejected["id"], "not now")).status_code == 200
        await r.wait_for(lambda: len(r.processed) == 6)

        assert all(x.verified for x in r.received) and len(r.received) == 6
        assert types(r, "/all") == sorted(
            [webhooks.CREATED] * 3 + [webhooks.APPROVED, webhooks.REJECTED, webhooks.EXPIRED])
        by_type = {x.payload["type"]: x.payload for x in r.received}
        approval = by_type[webhooks.APPROVED]
        assert set(approval) == {"type", "timestamp", "data"}
        assert approval["data"]["pendingChangeId"] == approved["id"]
        assert approval["data"]["status"] == "Approved"
        assert approval["data"]["executionResult"]["success"] is True
        assert by_type[webhooks.REJECTED]["data"]["reason"] == "not now"
        assert by_type[webhooks.EXPIRED]["data"]["pendingChangeId"] == expiring["id"]
        assert all(x.id.startswith("msg_") for x in r.received)
        assert len({x.id for x in r.received}) == 6

        items = await settled(h, ep, 6)
        assert {d["state"] for d in items} == {"succeeded"}
        assert all(len(d["attempts"]) == 1 and d["attempts"][0]["statusCode"] == 200
                   for d in items)
        assert {d["id"] for d in items} == {x.id for x in r.received}


async def test_a_tampered_body_does_not_verify(any_database_url: str) -> None:
    """The receiver's check is real: the library refuses a body that was changed."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    async with receiver() as r, app(any_database_url) as h:
        await add(h, r, "/a")
        await h.propose(await h.agent_key())
        await r.wait_for(lambda: len(r.processed) == 1)
        got = r.received[0]
        headers = {"webhook-id": got.id, "webhook-timestamp": got.timestamp,
                   "webhook-signature": got.signature}
        Webhook(r.secrets["/a"]).verify(got.body, headers)
        try:
            Webhook(r.secrets["/a"]).verify(got.body.replace(b"Pending", b"Approved"),
                                            headers)
        except WebhookVerificationError:
            pass
        else:
            raise AssertionError("a tampered body verified")


async def test_event_filter_and_tenant_wall(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        only_decisions = await add(h, r, "/decisions",
                                   events=[webhooks.APPROVED, webhooks.REJECTED])
        other_tenant = await add(h, r, "/globex", tenant="globex")
        key, token = await h.agent_key(), await h.reviewer_token()
        change = await h.propose(key)
        assert (await h.approve(token, change["id"])).status_code == 200
        items = await settled(h, only_decisions, 1)
        assert [d["type"] for d in items] == [webhooks.APPROVED]
        assert types(r, "/decisions") == [webhooks.APPROVED]
        # Queued in the same transactions: none exists for the other tenant, none later.
        assert await webhooks.deliveries(h.runtime.db, other_tenant) == []
        assert r.at("/globex") == []


async def counted(h: Harness) -> dict[str, float]:
    """``colaflow_webhook_deliveries_total`` by result, from ``GET /metrics``."""
    text = (await h.client.get("/metrics")).text
    found = re.findall(r'^colaflow_webhook_deliveries_total\{result="(\w+)"\} (\S+)$', text,
                       re.M)
    return {result: float(value) for result, value in found}


async def test_failures_then_success_keep_the_same_webhook_id(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        ep = await add(h, r, "/flaky")
        r.scripts["/flaky"].extend([500, 503])
        before = await counted(h)
        await h.propose(await h.agent_key())
        [item] = await settled(h, ep, 1)
        after = await counted(h)
        assert {k: after[k] - before[k] for k in after} == {
            "success": 1, "retry": 2, "failure": 0}
        assert [x.verified for x in r.received] == [True, True, True]
        assert len({x.id for x in r.received}) == 1 and r.received[0].id == item["id"]
        assert item["state"] == "succeeded"
        assert [(a["attempt"], a["statusCode"]) for a in item["attempts"]] == [
            (1, 500), (2, 503), (3, 200)]
        assert item["attempts"][0]["error"] == "HTTP 500"
        assert all(a["latencyMs"] >= 0 for a in item["attempts"])
        assert list(r.processed) == [item["id"]]


async def test_the_last_failed_attempt_is_final(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        ep = await add(h, r, "/down")
        r.scripts["/down"].extend([500, 500, 500, 500])
        await h.propose(await h.agent_key())
        [item] = await settled(h, ep, 1)
        assert item["state"] == "failed" and item["finishedAt"] is not None
        assert [a["statusCode"] for a in item["attempts"]] == [500, 500, 500]  # the schedule
        assert len(r.received) == 3 and r.processed == {}
        health = (await h.client.get("/health")).json()
        assert health["webhooks"]["failed"] == 1 and health["webhooks"]["retrying"] == 2
        assert health["loops"]["webhooks"] is True


async def test_a_refused_connection_is_recorded_and_retried(any_database_url: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with app(any_database_url) as h:
        t = await admin.get_or_create_tenant(h.runtime.db, "acme")
        ep = await webhooks.add_endpoint(h.runtime.db, t, f"http://127.0.0.1:{port}/x",
                                         allow_private=True)
        await h.propose(await h.agent_key())
        [item] = await settled(h, ep, 1)
        assert item["state"] == "failed"
        assert [a["statusCode"] for a in item["attempts"]] == [None, None, None]
        assert all(a["error"] for a in item["attempts"])


async def test_a_hanging_endpoint_delays_no_decision_and_no_other_endpoint(
        any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url, webhook_timeout_seconds=60.0,
                                    webhook_endpoint_concurrency=2) as h:
        hanging = await add(h, r, "/hangs")
        healthy = await add(h, r, "/healthy")
        r.scripts["/hangs"].extend(["hang"] * 20)
        key, token = await h.agent_key(), await h.reviewer_token()
        for _ in range(5):
            change = await h.propose(key)
            assert (await h.approve(token, change["id"])).status_code == 200
        # Every decision answered, and the healthy endpoint has all ten events, while the
        # hanging one still holds its first requests: nobody waited for it.
        await r.wait_for(lambda: len(r.at("/healthy")) == 10)
        assert not r.release.is_set() and r.path_in_flight["/hangs"] == 2
        assert r.most_in_flight["/hangs"] == 2  # its concurrency limit
        assert {d["state"] for d in await settled(h, healthy, 10)} == {"succeeded"}
        assert r.path_in_flight["/hangs"] == 2  # still hanging meanwhile
        r.release.set()
        items = await settled(h, hanging, 10)
        assert {d["state"] for d in items} == {"succeeded"}
        assert r.concurrent_ids == []


async def test_each_endpoint_reuses_its_few_connections(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        await add(h, r, "/a")
        await add(h, r, "/b")
        key = await h.agent_key()
        for _ in range(12):
            await h.propose(key)
        await r.wait_for(lambda: len(r.processed) == 24)

        assert all(x.verified for x in r.received)
        most = h.runtime.settings.webhook_endpoint_concurrency
        # Kept alive per endpoint: 12 deliveries each over at most its concurrency's worth
        # of connections, not one connection per delivery.
        assert 1 <= len(r.connections["/a"]) <= most
        assert 1 <= len(r.connections["/b"]) <= most


async def test_a_removed_endpoint_gets_nothing_more(any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url) as h:
        ep = await add(h, r, "/gone")
        key = await h.agent_key()
        await h.propose(key)
        await settled(h, ep, 1)
        await webhooks.remove_endpoint(h.runtime.db, ep.id)
        await h.propose(key)
        assert len(await webhooks.deliveries(h.runtime.db, ep)) == 1
        assert len(r.received) == 1

