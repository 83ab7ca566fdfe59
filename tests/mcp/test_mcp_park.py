"""Parked legacy sessions (issue 14, ``sdk_hooks`` hook 9): a session with nothing in flight
but its GET stream gives up the SDK's per-session machinery and keeps only its transport,
its event store and what it negotiated. It still gets its resource updates on its GET
stream, answers its next call with the same session id (initialized as before), can be
deleted, revoked and expires when idle, and counts as an open session.

Parking is forced with the manager's knob (``park_idle``), not by waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from colaflow_mcp.mcp import sdk_hooks
from colaflow_mcp.mcp.endpoint import McpEndpoint
from tests.harness import Harness, fast_settings, live_server
from tests.mcp.mcpenv import (
    INIT,
    Updates,
    legacy_headers,
    mcp_client,
    open_legacy_session,
    propose_issue,
    revoke_agent_key,
    subscribe,
)
from tests.mcp.test_mcp_sessions import SessionEnds

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "metrics-token-for-park-tests"


@asynccontextmanager
async def _server(database_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    async with live_server(fast_settings(database_url, metrics_token=METRICS_TOKEN,
                                         **overrides)) as h:
        yield h


def _endpoint(h: Harness) -> McpEndpoint:
    endpoint: McpEndpoint = h.runtime.mcp
    return endpoint


def _lives() -> int:
    """Sessions whose SDK machinery runs (each life is a task in the manager's group)."""
    return sum(1 for task in asyncio.all_tasks()
               if "SessionManager._run_life" in _awaited_functions(task))


def _awaited_functions(task: asyncio.Task[Any]) -> list[str]:
    names = []
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        names.append(awaited.cr_code.co_qualname)
        awaited = awaited.cr_await
    return names


async def _legacy_metric(h: Harness) -> float:
    r = await h.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200, r.text
    return next(s.value for family in text_string_to_metric_families(r.text)
                for s in family.samples
                if s.name == "colaflow_mcp_sessions" and s.labels == {"era": "legacy"})



async def _park_all(h: Harness) -> int:
    """Park every idle session now. The last request's handler may still be finishing
    after its response was sent (a session is not parked under a running handler), so
    wait, bounded, until none is running."""
    manager = _endpoint(h).manager
    parked = 0
    with anyio.fail_after(10):
        while True:
            parked += await manager.park_idle()
            lives = [sid for sid in manager.session_ids()
                     if (life := sdk_hooks.life_of(manager._server_instances[sid]))
                     and life.state == sdk_hooks.LIVE]
            if not lives:
                return parked
            await anyio.wait_all_tasks_blocked()


async def _assert_gone(h: Harness, key: str, session_id: str) -> None:
    """The session has ended: not held, not parked, and its id answers 404."""
    manager = _endpoint(h).manager
    assert manager.session_ids() == [] and manager.parked == 0
    r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                            headers=legacy_headers(key, session_id))
    assert r.status_code == 404


async def test_a_parked_session_gets_its_updates_and_answers_with_the_same_session(
    database_url: str,
) -> None:
    async with _server(database_url) as h:
        manager = _endpoint(h).manager
        await h.project()
        key, token = await h.agent_key(), await h.reviewer_token()
        updates = Updates()
        async with mcp_client(h, key, "legacy", updates) as client:
            first = await propose_issue(client, "first")
            await subscribe(client, first["resourceUri"])
            [session_id] = manager.session_ids()
            assert _lives() == 1

            assert await _park_all(h) == 1
            assert manager.parked == 1 and _lives() == 0  # no SDK session machinery left
            assert manager.session_ids() == [session_id]
            assert _endpoint(h).session_counts()["legacy"] == 1
            assert await _legacy_metric(h) == 1  # parked sessions count as open
            assert _endpoint(h).status()["legacySessionsParked"] == 1

            # An update reaches the parked session on its GET stream.
            assert (await h.approve(token, first["pendingChangeId"])).status_code == 200
            with anyio.fail_after(10):
                await updates.wait_for(first["resourceUri"])
            assert manager.parked == 1  # delivering it did not un-park it

            # Its next call un-parks it: answered on the same session, initialized as
            # before (a session that was not would refuse the call).
            second = await propose_issue(client, "second")
            assert manager.session_ids() == [session_id]
            assert manager.parked == 0 and _lives() == 1
            await subscribe(client, second["resourceUri"])

            # Parked again, and again an update arrives.
            assert await _park_all(h) == 1
            assert (await h.approve(token, second["pendingChangeId"])).status_code == 200
            with anyio.fail_after(10):
                await updates.wait_for(second["resourceUri"])
            assert (await client.list_tools()).tools
            assert manager.session_ids() == [session_id]
        assert updates.uris == [first["resourceUri"], second["resourceUri"]]
        assert manager.session_ids() == [] and manager.parked == 0  # the client's DELETE


async def test_a_parked_session_can_be_deleted_and_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _server(f"sqlite:///{tmp_path / 'park.db'}", mcp_max_sessions_per_key=1) as h:
        ends = SessionEnds(h, monkeypatch)
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        assert await _park_all(h) == 1
        r = await h.client.post("/mcp", json=INIT, headers=legacy_headers(key))
        assert r.status_code == 429
        r = await h.client.delete("/mcp", headers=legacy_headers(key, session_id))
        assert r.status_code == 200, r.text
        with anyio.fail_after(10):
            await ends.wait_for(session_id)
        await _assert_gone(h, key, session_id)
        r = await h.client.post("/mcp", json=INIT, headers=legacy_headers(key))
        assert r.status_code == 200


async def test_a_parked_session_with_nothing_in_flight_expires_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _server(f"sqlite:///{tmp_path / 'park.db'}", mcp_max_sessions_per_key=1,
                       mcp_session_idle_timeout_seconds=0.5) as h:
        ends = SessionEnds(h, monkeypatch)
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        assert await _park_all(h) == 1
        with anyio.fail_after(10):
            await ends.wait_for(session_id)
        await _assert_gone(h, key, session_id)


async def test_a_parked_session_holding_its_get_stream_does_not_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a live one: an open GET stream is a request in flight. Once it closes, the
    parked session expires after the idle timeout."""
    async with _server(f"sqlite:///{tmp_path / 'park.db'}",
                       mcp_session_idle_timeout_seconds=0.5) as h:
        manager = _endpoint(h).manager
        ends = SessionEnds(h, monkeypatch)
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        async with h.client.stream("GET", "/mcp", headers=legacy_headers(key, session_id)) as get:
            assert get.status_code == 200
            assert await _park_all(h) == 1
            # Three idle timeouts and three of the parker's ticks later, still there.
            await manager._expire_parked(anyio.current_time() + 3600)
            assert manager.session_ids() == [session_id] and ends.ids == []
        with anyio.fail_after(10):
            await ends.wait_for(session_id)
        assert manager.session_ids() == []


async def test_revoking_a_key_ends_its_parked_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _server(f"sqlite:///{tmp_path / 'park.db'}") as h:
        manager = _endpoint(h).manager
        ends = SessionEnds(h, monkeypatch)
        key = await h.agent_key()
        quiet = await open_legacy_session(h, key)
        streaming = await open_legacy_session(h, key)
        async with h.client.stream("GET", "/mcp", headers=legacy_headers(key, streaming)) as get:
            assert get.status_code == 200
            assert await _park_all(h) == 2
            await revoke_agent_key(h, key)
            with anyio.fail_after(10):
                async for _ in get.aiter_bytes():
                    pass  # the stream ends with its session
                await ends.wait_for(quiet, streaming)
        assert manager.session_ids() == [] and manager.parked == 0


class _Stored:
    """A store listener that only wakes a waiter."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def changed(self) -> None:
        self._event.set()

    def end(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


async def test_a_parked_session_resumes_its_get_stream_after_last_event_id(
    tmp_path: Path,
) -> None:
    """``Last-Event-ID`` on a parked session: the GET stream replays from the store what
    came after that id, without un-parking."""
    async with _server(f"sqlite:///{tmp_path / 'park.db'}") as h:
        manager = _endpoint(h).manager
        await h.project()
        key, token = await h.agent_key(), await h.reviewer_token()
        session_id = await open_legacy_session(h, key)
        ids = [(await h.propose(key, arguments={"project_key": "WEB", "title": f"t{i}"}))["id"]
               for i in range(2)]
        for n, change_id in enumerate(ids):
            body = {"jsonrpc": "2.0", "id": 10 + n, "method": "resources/subscribe",
                    "params": {"uri": f"colaflow://pending-changes/{change_id}"}}
            r = await h.client.post("/mcp", json=body, headers=legacy_headers(key, session_id))
            assert r.status_code == 200, r.text
        assert await _park_all(h) == 1
        store = manager.event_store_of(session_id)
        assert store is not None
        stored = _Stored()
        store.attach_get_stream(stored)  # told of each event stored, as a GET stream is
        for change_id in ids:
            assert (await h.approve(token, change_id)).status_code == 200
        with anyio.fail_after(10):
            while len(store.get_events_after(0)) < 2:
                await stored.wait()
        store.detach_get_stream(stored)
        [(first_seq, _), (second_seq, _)] = store.get_events_after(0)
        headers = {**legacy_headers(key, session_id), "Last-Event-ID": f"g{first_seq}"}
        received = b""
        with anyio.fail_after(10):
            async with h.client.stream("GET", "/mcp", headers=headers) as get:
                assert get.status_code == 200
                async for chunk in get.aiter_raw():
                    received += chunk
                    if f"id: g{second_seq}".encode() in received:
                        break
        assert f"id: g{first_seq}\r".encode() not in received  # only what came after it
        assert ids[1].encode() in received and ids[0].encode() not in received
        assert manager.parked == 1  # a GET stream needs no SDK session


async def test_a_busy_session_is_not_parked(tmp_path: Path) -> None:
    """A request in flight (here: a request-stream resumption, held open) keeps the
    session live: nothing is parked under it."""
    async with _server(f"sqlite:///{tmp_path / 'park.db'}") as h:
        manager = _endpoint(h).manager
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
                                headers=legacy_headers(key, session_id))
        assert r.status_code == 200
        event_ids = [line.split(b": ", 1)[1].strip() for line in r.content.splitlines()
                     if line.startswith(b"id: r")]
        assert event_ids
        headers = {**legacy_headers(key, session_id), "Last-Event-ID": event_ids[0].decode()}
        async with h.client.stream("GET", "/mcp", headers=headers) as get:
            assert get.status_code == 200
            assert await manager.park_idle() == 0
            assert manager.parked == 0
        with anyio.fail_after(10):
            assert await _park_all(h) == 1
