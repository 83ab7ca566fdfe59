"""``/health/live`` and ``/health/ready``: readiness fails, naming why, while PostgreSQL is
unreachable, a supervised loop is down or the Redis backplane is cut, and comes back when
they do; ``/health`` keeps its body."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from colaflow_mcp.delivery.backplane import RedisBackplane
from tests.harness import (
    Harness,
    database_url_for,
    default_db_kind,
    fast_settings,
    in_process,
    redis_address,
    redis_url_at,
    require_service,
)
from tests.netproxy import proxied_postgres, proxy_to

pytestmark = pytest.mark.anyio


async def ready(h: Harness) -> httpx.Response:
    return await h.client.get("/health/ready")


async def until_ready(h: Harness, within: float = 15.0) -> httpx.Response:
    """Ask again whenever a supervised loop goes up or down, until ready."""
    supervisor = h.runtime.supervisor
    with anyio.fail_after(within):
        while True:
            changed = supervisor.alive_changed
            r = await ready(h)
            if r.status_code == 200:
                return r
            await changed.wait()



async def test_liveness_answers_and_health_keeps_its_body(tmp_path: Path) -> None:
    url = await database_url_for(default_db_kind(), tmp_path)
    async with in_process(fast_settings(url)) as h:
        live = await h.client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        r = await ready(h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready" and body["failing"] == []
        assert body["checks"]["database"] and body["checks"]["loop:expiry"]
        assert "backplane" not in body["checks"]  # in-process: nothing to connect
        health = (await h.client.get("/health")).json()
        assert {"status", "database", "backplane", "loops", "loopPasses", "instance",
                "subscribers", "reviewQueues", "hub", "mcp"} <= set(health)
        assert health["status"] == "ok"


@pytest.mark.postgres
async def test_readiness_fails_while_postgresql_is_unreachable_and_returns(
        tmp_path: Path) -> None:
    async with proxied_postgres() as (proxy, proxied):
        settings = fast_settings(proxied, loop_max_backoff_seconds=0.2,
                                 readiness_timeout_seconds=2.0)
        async with in_process(settings) as h:
            assert (await ready(h)).status_code == 200
            proxy.cut()
            r = await ready(h)
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "not ready"
            assert "database" in r.json()["failing"]
            assert r.json()["checks"]["database"] is False
            assert (await h.client.get("/health/live")).status_code == 200
            proxy.restore()
            r = await until_ready(h)
            assert r.json()["failing"] == []


async def test_readiness_fails_while_a_supervised_loop_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = await database_url_for(default_db_kind(), tmp_path)
    settings = fast_settings(url, announce_sweep_interval_seconds=0.05,
                             loop_max_backoff_seconds=0.2)
    async with in_process(settings) as h:
        supervisor = h.runtime.supervisor
        assert (await ready(h)).status_code == 200
        broken = anyio.Event()

        async def fails(*args: Any, **kwargs: Any) -> int:
            broken.set()
            raise RuntimeError("the sweep's query failed")

        original = h.runtime.recovery.sweep_unannounced
        monkeypatch.setattr(h.runtime.recovery, "sweep_unannounced", fails)
        with anyio.fail_after(10):
            await broken.wait()
            while supervisor.alive["announce-sweep"]:
                await supervisor.alive_changed.wait()
        r = await ready(h)
        assert r.status_code == 503, r.text
        assert r.json()["failing"] == ["loop:announce-sweep"]
        monkeypatch.setattr(h.runtime.recovery, "sweep_unannounced", original)
        await until_ready(h)


@pytest.mark.redis
async def test_readiness_fails_while_the_redis_backplane_is_cut(tmp_path: Path) -> None:
    require_service("Redis", *redis_address())
    url = await database_url_for(default_db_kind(), tmp_path)
    async with proxy_to(*redis_address()) as proxy:
        settings = fast_settings(
            url, redis_url=redis_url_at("127.0.0.1", proxy.port),
            redis_channel=f"colaflow:test:{uuid.uuid4().hex}", redis_liveness_seconds=1.0,
            bus_reconnect_max_backoff_seconds=0.2)
        async with in_process(settings) as h:
            bus = h.runtime.bus
            assert isinstance(bus, RedisBackplane)
            with anyio.fail_after(10):
                while not bus.healthy:
                    await bus.link_changed.wait()
            r = await ready(h)
            assert r.status_code == 200 and r.json()["checks"]["backplane"], r.text
            metrics = await h.client.get("/metrics")
            assert "colaflow_backplane_connected 1.0" in metrics.text
            proxy.cut()
            with anyio.fail_after(10):
                while bus.healthy:
                    await bus.link_changed.wait()
            r = await ready(h)
            assert r.status_code == 503 and r.json()["failing"] == ["backplane"], r.text
            metrics = await h.client.get("/metrics")
            assert "colaflow_backplane_connected 0.0" in metrics.text
            proxy.restore()
            with anyio.fail_after(15):
                while not bus.healthy:
                    await bus.link_changed.wait()
            assert (await ready(h)).status_code == 200


async def test_readiness_fails_as_soon_as_shutdown_begins(tmp_path: Path) -> None:
    url = await database_url_for(default_db_kind(), tmp_path)
    async with in_process(fast_settings(url)) as h:
        assert (await ready(h)).status_code == 200
        await h.runtime.hub.shutdown()  # what a graceful stop does first
        r = await ready(h)
        assert r.status_code == 503 and r.json()["failing"] == ["running"], r.text
        assert (await h.client.get("/health/live")).status_code == 200
