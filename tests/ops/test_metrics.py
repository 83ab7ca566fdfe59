"""``GET /metrics``: a scripted scenario moves each counter by exactly its count, the
gauges show what is open, the notify histogram counts each notification written, and the
metrics token is enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from colaflow_mcp import metrics
from tests.hub.hubenv import HubEnv, Tenant, run_server
from tests.hub.hubwire import HANDSHAKE, RawWs, frames, msg, open_ws
from tests.mcp.mcpenv import Updates, mcp_client, propose_issue, watching

pytestmark = pytest.mark.anyio

TOKEN = "metrics-token-for-tests"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(env: HubEnv, token: str | None = TOKEN) -> Samples:
    """Every sample of ``/metrics``, by name and labels."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await env.harness.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def notified(env: HubEnv, before: Samples, surface: str, count: int) -> Samples:
    """Scrape until ``count`` more notifications on ``surface`` were observed (the server
    observes right after its write returns, which may be just after the client read it);
    then the scrape, which must not show more."""
    with anyio.fail_after(10):
        while True:
            after = await scrape(env)
            if moved(before, after, "colaflow_notify_seconds_count", surface=surface) >= count:
                return after


@asynccontextmanager
async def sse_connection(env: HubEnv, t: Tenant) -> AsyncIterator[None]:
    """A hub connection over Server-Sent Events, handshake done, its stream read until
    exit."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {t.key}"},
                                 timeout=30) as http:
        neg = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1")
        url = f"{env.hub_url}?id={neg.json()['connectionToken']}"
        opened, connected = anyio.Event(), anyio.Event()

        async def read() -> None:
            async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                opened.set()
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and {} in frames(line[6:]):
                        connected.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(5):
                await opened.wait()
                assert (await http.post(url, content=HANDSHAKE)).status_code == 200
                await connected.wait()
            yield
            tg.cancel_scope.cancel()


@asynccontextmanager
async def long_polling_connection(env: HubEnv, t: Tenant) -> AsyncIterator[None]:
    """A hub connection over long polling, a poll always held (as a client does), ended
    at exit."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {t.key}"},
                                 timeout=30) as http:
        neg = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1")
        url = f"{env.hub_url}?id={neg.json()['connectionToken']}"
        assert (await http.get(url)).status_code == 200  # the first poll returns at once
        assert (await http.post(url, content=HANDSHAKE)).status_code == 200

        async def poll() -> None:
            while (await http.get(url)).status_code == 200:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            yield
            tg.cancel_scope.cancel()
        await http.delete(url)


async def hub_subscribe(ws: RawWs, change_ids: list[str]) -> None:
    for n, cid in enumerate(change_ids):
        done = await ws.invoke("SubscribeToPendingChange", cid, invocation_id=str(n))
        assert "error" not in done, done


async def test_a_scripted_scenario_moves_every_metric_by_exactly_its_count(
        tmp_path: Path) -> None:
    async with run_server(tmp_path, metrics_token=TOKEN) as env:
        t = await env.tenant("acme")
        h = env.harness
        before = await scrape(env)
        ws1 = await open_ws(env.ws_url, t.key)
        ws2 = await open_ws(env.ws_url, t.key)
        legacy_updates, modern_updates = Updates(), Updates()
        async with sse_connection(env, t), long_polling_connection(env, t), \
                mcp_client(h, t.key, "legacy", legacy_updates) as legacy, \
                mcp_client(h, t.key, "modern") as modern:
            # Six proposals: four over REST (three tools' worth of two kinds), two as MCP
            # tool calls.
            ids = [(await h.propose(t.key, arguments={"project_key": "WEB",
                                                      "title": f"rest {i}"}))["id"]
                   for i in range(3)]
            ids.append((await h.propose(t.key, "create_project",
                                        {"key": "OPS", "name": "Operations"}))["id"])
            ids += [(await propose_issue(legacy, f"mcp {i}"))["pendingChangeId"]
                    for i in range(2)]
            uris = [f"colaflow://pending-changes/{cid}" for cid in ids]
            # Subscribers: the hub (one WebSocket) to four changes, MCP legacy to three,
            # MCP modern to the other three.
            await hub_subscribe(ws1, ids[:4])
            async with watching(legacy, "legacy", legacy_updates, uris[:3]), \
                    watching(modern, "modern", modern_updates, uris[3:]):
                live = await scrape(env)
                assert value(live, "colaflow_hub_connections", transport="WebSockets") == 2
                assert value(live, "colaflow_hub_connections",
                             transport="ServerSentEvents") == 1
                assert value(live, "colaflow_hub_connections", transport="LongPolling") == 1
                assert value(live, "colaflow_mcp_sessions", era="legacy") == 1
                assert value(live, "colaflow_mcp_sessions", era="modern") == 1
                assert value(live, "colaflow_backplane_connected") == 1
                # Two approvals, two rejections, two expiries.
                for cid in ids[:2]:
                    assert (await h.approve(t.token, cid)).status_code == 200
                for cid in ids[2:4]:
                    assert (await h.reject(t.token, cid, "not now")).status_code == 200
                for cid in ids[4:]:
                    await env.expire_now(cid)
                with anyio.fail_after(10):
                    for _ in range(4):
                        await ws1.drain_until(lambda f: f.get("type") == 1)
                    for uri in uris[:3]:
                        await legacy_updates.wait_for(uri)
                    for uri in uris[3:]:
                        await modern_updates.wait_for(uri)
                await notified(env, before, "hub", 4)
                after = await notified(env, before, "mcp", 6)
        await ws1.ws.close()
        await ws2.ws.close()
    assert moved(before, after, "colaflow_proposals_total", tool="create_issue") == 5
    assert moved(before, after, "colaflow_proposals_total", tool="create_project") == 1
    assert moved(before, after, "colaflow_proposals_total", tool="add_comment") == 0
    assert moved(before, after, "colaflow_decisions_total", outcome="approved") == 2
    assert moved(before, after, "colaflow_decisions_total", outcome="rejected") == 2
    assert moved(before, after, "colaflow_decisions_total", outcome="expired") == 2
    assert moved(before, after, "colaflow_notify_seconds_count", surface="hub") == 4
    assert moved(before, after, "colaflow_notify_seconds_count", surface="mcp") == 6
    # Every notification of this scenario took less than a minute (the last finite
    # bucket), so each is in it too.
    assert moved(before, after, "colaflow_notify_seconds_bucket", surface="hub",
                 le="60.0") == 4
    assert moved(before, after, "colaflow_webhook_deliveries_total", result="success") == 0


async def test_subscribing_to_a_decided_change_is_no_notification_latency(
        tmp_path: Path) -> None:
    async with run_server(tmp_path, metrics_token=TOKEN) as env:
        t = await env.tenant("acme")
        cid = await env.propose(t)
        await env.reject(t, cid, "no")
        before = await scrape(env)
        ws = await open_ws(env.ws_url, t.key)
        await hub_subscribe(ws, [cid])
        event = await ws.drain_until(lambda f: f.get("type") == 1)
        assert event["target"] == "PendingChangeRejected"
        # A ping round trip: the event's write is long done.
        await ws.send(msg({"type": 6}))
        after = await scrape(env)
        await ws.ws.close()
    assert moved(before, after, "colaflow_notify_seconds_count", surface="hub") == 0


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic bWV0cmljczp4",
                                    f"Bearer {TOKEN}x"])
async def test_metrics_need_the_token_when_one_is_set(tmp_path: Path,
                                                     header: str | None) -> None:
    async with run_server(tmp_path, metrics_token=TOKEN) as env:
        headers = {"Authorization": header} if header else {}
        r = await env.harness.client.get("/metrics", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert "colaflow_" not in r.text
        assert (await env.harness.client.get(
            "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200


async def test_metrics_are_open_without_a_token(tmp_path: Path) -> None:
    async with run_server(tmp_path) as env:
        samples = await scrape(env, token=None)
    assert value(samples, "colaflow_backplane_connected") == 1
    assert ("process_resident_memory_bytes", ()) in samples


async def test_webhook_deliveries_are_counted_by_bounded_result(tmp_path: Path) -> None:
    async with run_server(tmp_path, metrics_token=TOKEN) as env:
        before = await scrape(env)
        metrics.webhook_delivery("success")
        metrics.webhook_delivery("retry")
        metrics.webhook_delivery("retry")
        metrics.webhook_delivery("failure")
        bad: Any = "https://example.com/hook"
        with pytest.raises(ValueError, match="success"):
            metrics.webhook_delivery(bad)  # never a free-form label value
        after = await scrape(env)
    assert [moved(before, after, "colaflow_webhook_deliveries_total", result=r)
            for r in ("success", "retry", "failure")] == [1, 2, 1]
    assert not [k for k in after if k[0].startswith("colaflow_webhook")
                and dict(k[1]).get("result") not in metrics.WEBHOOK_RESULTS]


def test_tool_labels_stay_bounded_whatever_the_caller_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter("colaflow_proposals", "test copy", ["tool"], registry=None)
    monkeypatch.setattr(metrics, "PROPOSALS", counter)
    monkeypatch.setattr(metrics, "_PROPOSED", {})
    for i in range(200):
        metrics.proposed(f"made-up-tool-{i}")
    samples = [s for s in counter.collect()[0].samples if s.name.endswith("_total")]
    assert len(samples) == 65
    assert {s.labels["tool"]: s.value for s in samples}["other"] == 200 - 64
