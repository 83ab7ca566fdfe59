"""Legacy sessions are capped per API key (and overall); ended sessions free their slots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.harness import Harness, fast_settings, live_server
from tests.mcp.mcpenv import INIT, legacy_headers, mcp_client, open_legacy_session, revoke_agent_key

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def _server(tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    async with live_server(fast_settings(f"sqlite:///{tmp_path / 'sessions.db'}",
                                         **overrides)) as h:
        yield h


async def _initialize(h: Harness, key: str) -> httpx.Response:
    return await h.client.post("/mcp", json=INIT, headers=legacy_headers(key))


def _mcp_error(group: BaseException) -> MCPError:
    """The MCPError inside the task-group exceptions the SDK client raises it in."""
    if isinstance(group, MCPError):
        return group
    if isinstance(group, BaseExceptionGroup):
        for inner in group.exceptions:
            try:
                return _mcp_error(inner)
            except AssertionError:
                continue
    raise AssertionError(f"no MCPError in {group!r}")


class SessionEnds:
    """Session ids as their sessions end (DELETE, idle timeout, revocation, shutdown)."""

    def __init__(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ids: list[str] = []
        self._changed = anyio.Event()
        endpoint = h.runtime.mcp
        original = endpoint.session_closed

        def session_closed(session_id: str) -> None:
            original(session_id)
            if session_id not in self.ids:
                self.ids.append(session_id)
                self._changed.set()
                self._changed = anyio.Event()

        monkeypatch.setattr(endpoint, "session_closed", session_closed)

    async def wait_for(self, *session_ids: str) -> None:
        """Wait (bounded by the caller's ``fail_after``) until these sessions ended."""
        while not set(session_ids) <= set(self.ids):
            await self._changed.wait()


async def test_a_key_over_its_session_limit_is_told_why_and_other_keys_are_served(
    tmp_path: Path,
) -> None:
    async with _server(tmp_path, mcp_max_sessions_per_key=2) as h:
        key, other_key = await h.agent_key(), await h.agent_key("globex")
        async with mcp_client(h, key, "legacy"), mcp_client(h, key, "legacy"):
            with pytest.raises(BaseException) as refused:
                async with mcp_client(h, key, "legacy"):
                    pass
            error = _mcp_error(refused.value)
            raw = await _initialize(h, key)
            # Another key (same tenant or not) is not affected by this key's sessions.
            for other in (await h.agent_key(), other_key):
                async with mcp_client(h, other, "legacy") as client:
                    assert (await client.list_tools()).tools
        # Both closed (the SDK sends DELETE): the key can open two again.
        async with mcp_client(h, key, "legacy"), mcp_client(h, key, "legacy") as client:
            assert (await client.list_tools()).tools
    assert "Too many open MCP sessions for this API key (limit 2)" in error.message
    assert "COLAFLOW_MCP_MAX_SESSIONS_PER_KEY" in error.message
    assert raw.status_code == 429
    assert raw.json()["error"]["message"] == error.message
    assert raw.json()["error"]["data"] == {"maxSessionsPerKey": 2}
    assert key not in raw.text


async def test_concurrent_opens_cannot_overshoot_the_limit(tmp_path: Path) -> None:
    async with _server(tmp_path, mcp_max_sessions_per_key=3) as h:
        key = await h.agent_key()
        statuses: list[int] = []

        async def open_one() -> None:
            statuses.append((await _initialize(h, key)).status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(open_one)
    assert sorted(statuses) == [200] * 3 + [429] * 9


async def test_modern_requests_hold_no_session_and_are_not_capped(tmp_path: Path) -> None:
    async with _server(tmp_path, mcp_max_sessions_per_key=1) as h:
        key = await h.agent_key()
        async with mcp_client(h, key, "legacy"), mcp_client(h, key, "modern") as a, \
                mcp_client(h, key, "modern") as b:
            assert (await a.list_tools()).tools and (await b.list_tools()).tools


async def test_delete_frees_the_slot_at_once(tmp_path: Path) -> None:
    async with _server(tmp_path, mcp_max_sessions_per_key=1) as h:
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        assert (await _initialize(h, key)).status_code == 429
        r = await h.client.delete("/mcp", headers=legacy_headers(key, session_id))
        assert r.status_code == 200
        # No waiting: the session ended when the DELETE was answered.
        assert (await _initialize(h, key)).status_code == 200


async def test_an_idle_session_expires_and_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _server(tmp_path, mcp_max_sessions_per_key=1,
                       mcp_session_idle_timeout_seconds=0.5) as h:
        ends = SessionEnds(h, monkeypatch)
        key = await h.agent_key()
        session_id = await open_legacy_session(h, key)
        assert (await _initialize(h, key)).status_code == 429
        with anyio.fail_after(10):
            await ends.wait_for(session_id)
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                                headers=legacy_headers(key, session_id))
        assert r.status_code == 404
        assert (await _initialize(h, key)).status_code == 200


async def test_revoking_a_key_ends_all_its_sessions_and_frees_their_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _server(tmp_path, mcp_max_sessions=2) as h:
        ends = SessionEnds(h, monkeypatch)
        key, other_key = await h.agent_key(), await h.agent_key("globex")
        # Two sessions without any subscription, one of them holding its GET stream.
        quiet = await open_legacy_session(h, key)
        streaming = await open_legacy_session(h, key)
        # The SDK's overall cap, now a setting, is full: it answers 503.
        assert (await _initialize(h, other_key)).status_code == 503
        async with h.client.stream("GET", "/mcp", headers=legacy_headers(key, streaming)) as get:
            assert get.status_code == 200
            await revoke_agent_key(h, key)
            with anyio.fail_after(10):
                async for _ in get.aiter_bytes():
                    pass  # the stream ends with its session
                await ends.wait_for(quiet, streaming)
        assert (await _initialize(h, other_key)).status_code == 200
