"""A legacy session's GET stream is served before the SDK's session manager (issue 14,
``sdk_hooks`` hook 10): the endpoint makes the SDK's checks itself and hands the request to
``GetStream``, so the held GET keeps no frame of the SDK's request path. Every request the
SDK would refuse still goes to the SDK and gets its answer; what a served stream sends is
byte for byte what the SDK's path sent. Compared against the same server with the direct
path turned off (the SDK's path, as before)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from colaflow_mcp.mcp.endpoint import McpEndpoint
from tests.harness import Harness
from tests.mcp.mcpenv import legacy_headers, open_legacy_session, revoke_agent_key
from tests.mcp.test_mcp_http import RawSession

pytestmark = pytest.mark.anyio

# Frames of the SDK's request path that a GET served through it keeps while it is held.
SDK_PATH = ("RequestBodyLimitMiddleware.__call__",
            "StreamableHTTPSessionManager._handle_stateful_request",
            "StreamableHTTPServerTransport._handle_get_request",
            "LeanGetTransport._replay_events")


def _endpoint(h: Harness) -> McpEndpoint:
    endpoint: McpEndpoint = h.runtime.mcp
    return endpoint


class DirectCount:
    """How many GET streams the endpoint served directly."""

    def __init__(self) -> None:
        self.served = 0


@contextmanager
def direct_path(h: Harness, on: bool) -> Iterator[DirectCount]:
    """Count the direct path's GET streams; with ``on=False`` every GET takes the SDK's
    path (the endpoint as it was before hook 10)."""
    manager = _endpoint(h).manager
    count = DirectCount()
    check, serve = manager.direct_get_stream, manager.serve_get_stream

    async def counted(*args: Any) -> None:
        count.served += 1
        await serve(*args)

    manager.direct_get_stream = check if on else (lambda *args: None)  # type: ignore[method-assign]
    manager.serve_get_stream = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del manager.direct_get_stream, manager.serve_get_stream


async def _head_and_first_event(h: Harness, headers: dict[str, str]
                                ) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (but the date) and the bytes up to the end of the first event."""
    received = b""
    with anyio.fail_after(10):
        async with h.client.stream("GET", "/mcp", headers=headers) as get:
            async for chunk in get.aiter_raw():
                received += chunk
                if received.count(b"\r\n\r\n") >= 2:  # the retry hint, then an event
                    break
            head = [(k, v) for k, v in get.headers.multi_items() if k != "date"]
            return get.status_code, head, received


async def test_a_get_stream_is_served_directly_with_the_sdk_paths_bytes(
        server: Harness) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    session = RawSession(server.client, key)
    await session.open()
    change = await server.propose(key)
    assert (await server.approve(token, change["id"])).status_code == 200
    # Decided before subscribing: the update is stored on the GET stream at once.
    assert "error" not in await session.request("resources/subscribe",
                                                 {"uri": change["resourceUri"]})
    replay = session.headers(**{"Last-Event-ID": "g0"})  # everything the stream holds
    with direct_path(server, on=False) as sdk:
        through_sdk = await _head_and_first_event(server, replay)
    with direct_path(server, on=True) as direct:
        served = await _head_and_first_event(server, replay)
    assert (sdk.served, direct.served) == (0, 1)
    assert served == through_sdk
    status, _, body = served
    assert status == 200 and body.startswith(b"retry: 3000\r\n\r\nid: g")
    assert change["resourceUri"].encode() in body


async def test_a_held_get_stream_keeps_no_frame_of_the_sdks_request_path(
        server: Harness) -> None:
    key = await server.agent_key()
    session_id = await open_legacy_session(server, key)

    def held_paths() -> list[list[str]]:
        paths = []
        for task in asyncio.all_tasks():
            names, awaited = [], task.get_coro()
            while awaited is not None and hasattr(awaited, "cr_code"):
                names.append(awaited.cr_code.co_qualname)
                awaited = awaited.cr_await
            if "GetStream.serve" in names:
                paths.append(names)
        return paths

    with direct_path(server, on=True) as direct:
        async with server.client.stream("GET", "/mcp",
                                        headers=legacy_headers(key, session_id)) as get:
            assert get.status_code == 200
            with anyio.fail_after(10):
                async for chunk in get.aiter_raw():
                    if b"retry:" in chunk:
                        break
            (path,) = held_paths()
            assert direct.served == 1
            assert [name for name in path if name in SDK_PATH] == [], path
            assert "SessionManager.serve_get_stream" in path


async def test_gets_the_sdk_refuses_get_the_sdks_answer(server: Harness) -> None:
    """A wrong, absent or ended session id, another key's session (same tenant or not),
    an Accept without text/event-stream: not served directly, and answered exactly as
    the SDK answers them."""
    key = await server.agent_key()
    session_id = await open_legacy_session(server, key)
    ended_id = await open_legacy_session(server, key)
    r = await server.client.delete("/mcp", headers=legacy_headers(key, ended_id))
    assert r.status_code == 200, r.text
    same_tenant, other_tenant = await server.agent_key(), await server.agent_key("globex")
    revoked = await server.agent_key(name="retired")
    revoked_session = await open_legacy_session(server, revoked)
    await revoke_agent_key(server, revoked)
    cases = {
        "unknown session": legacy_headers(key, "0" * 32),
        "no session id": legacy_headers(key),
        "ended session": legacy_headers(key, ended_id),
        "another key's session": legacy_headers(same_tenant, session_id),
        "another tenant's session": legacy_headers(other_tenant, session_id),
        "a revoked key's session": legacy_headers(revoked, revoked_session),
        "no text/event-stream": {**legacy_headers(key, session_id),
                                 "Accept": "application/json"},
    }
    answers: dict[bool, dict[str, tuple[int, str]]] = {}
    for on in (False, True):
        with direct_path(server, on) as direct:
            answers[on] = {}
            for case, headers in cases.items():
                with anyio.fail_after(10):
                    r = await server.client.get("/mcp", headers=headers)
                answers[on][case] = (r.status_code, r.text)
            assert direct.served == 0
    assert answers[True] == answers[False]
    for case in ("unknown session", "another key's session", "another tenant's session"):
        assert answers[True][case][0] == 404 and "Session not found" in answers[True][case][1]
    assert answers[True]["ended session"][0] == 404
    assert answers[True]["no text/event-stream"][0] == 406
    assert answers[True]["a revoked key's session"][0] == 401
    # And the session itself still serves its GET stream directly.
    with direct_path(server, on=True) as direct:
        status, _, _ = await _first_block(server, legacy_headers(key, session_id))
    assert (status, direct.served) == (200, 1)


async def _first_block(h: Harness, headers: dict[str, str]) -> tuple[int, str, bytes]:
    with anyio.fail_after(10):
        async with h.client.stream("GET", "/mcp", headers=headers) as get:
            async for chunk in get.aiter_raw():
                return get.status_code, get.headers["content-type"], chunk
    raise AssertionError("the GET stream ended")


async def test_a_get_with_a_2026_protocol_version_is_left_to_the_sdk(server: Harness) -> None:
    """A protocol version the legacy handshake does not know goes to the SDK's 2026-era
    handling, with or without a session id."""
    key = await server.agent_key()
    session_id = await open_legacy_session(server, key)
    headers = {**legacy_headers(key, session_id), "MCP-Protocol-Version": "2026-07-28"}
    answers = []
    for on in (False, True):
        with direct_path(server, on) as direct:
            r = await server.client.get("/mcp", headers=headers)
            answers.append((r.status_code, r.text))
            assert direct.served == 0
    assert answers[0] == answers[1] and answers[0][0] != 200
