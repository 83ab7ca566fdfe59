"""The supervisor: every background loop named, restarted when it fails, stopped in order,
and all of them visible in /health."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from colaflow_mcp.supervisor import Supervisor
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def test_a_failing_loop_is_logged_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(max_backoff=0.05, stop_grace=1)
    runs = 0
    steady = anyio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await supervisor.stopping.wait()

    supervisor.loop("flaky", flaky)
    with caplog.at_level(logging.ERROR, logger="colaflow_mcp.supervisor"):
        async with supervisor.running():
            with anyio.fail_after(5):
                await steady.wait()
            assert supervisor.status()["loops"] == {"flaky": True}
    failures = [r for r in caplog.records if "background loop flaky failed" in r.message]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert runs == 3 and supervisor.status()["loops"] == {"flaky": False}


async def test_stop_drains_finishing_loops_then_cancels_the_rest_then_leaves_services() -> None:
    supervisor = Supervisor(stop_grace=5)
    order: list[str] = []
    started = anyio.Event()
    closed = anyio.Event()  # what a stop hook tells a draining loop (like the outbox)

    async def drains() -> None:
        started.set()
        await closed.wait()
        # Its last write: whatever else stop would do (cancel the listener) happens now
        # unless stop waits for this loop first.
        await anyio.wait_all_tasks_blocked()
        order.append("drained")

    async def listens() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            order.append("cancelled")

    @asynccontextmanager
    async def service() -> AsyncIterator[None]:
        order.append("service entered")
        try:
            yield
        finally:
            order.append("service left")

    supervisor.service("sessions", service)
    supervisor.loop("publisher", drains)
    supervisor.loop("listener", listens, finish=False)
    supervisor.on_stop(lambda: (order.append("hook"), closed.set()))
    with anyio.fail_after(5):
        async with supervisor.running():
            await started.wait()
    assert order == ["service entered", "hook", "drained", "cancelled", "service left"]


async def test_health_reports_every_background_loop_of_the_instance(
    app_harness: Harness,
) -> None:
    r = await app_harness.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body["loops"]) == {
        "backplane", "publisher", "announce-marker", "expiry", "announce-sweep", "reconcile",
        "revocation", "hub-timers", "mcp-sessions", "webhooks"}
    assert all(body["loops"].values()) and body["status"] == "ok"
    assert {"database", "backplane", "loopPasses", "instance", "subscribers", "hub",
            "mcp"} <= set(body)
