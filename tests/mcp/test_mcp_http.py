"""The endpoint over plain HTTP: auth, host/origin checks, session ownership, resumability."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from colaflow_mcp.domain import admin
from colaflow_mcp.mcp.endpoint import host_allowed, origin_allowed
from colaflow_mcp.mcp.event_store import SessionEventStore
from tests.harness import Harness, fast_settings, live_server

pytestmark = pytest.mark.anyio

LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def _init_body() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "0"}}}


class RawSession:
    """A legacy session driven with plain HTTP, to look at statuses, headers and SSE ids."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.key = key
        self.session_id = ""
        self._ids = 1

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.key}", "Accept": ACCEPT,
             "MCP-Protocol-Version": LEGACY}
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        h.update(extra)
        return h

    async def open(self) -> None:
        r = await self.client.post("/mcp", json=_init_body(), headers=self.headers())
        assert r.status_code == 200, r.text
        self.session_id = r.headers["mcp-session-id"]
        r = await self.client.post("/mcp", json={"jsonrpc": "2.0",
                                                 "method": "notifications/initialized"},
                                   headers=self.headers())
        assert r.status_code == 202, r.text

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        r = await self.client.post("/mcp", json={"jsonrpc": "2.0", "id": self._ids,
                                                 "method": method, "params": params},
                                   headers=self.headers())
        assert r.status_code == 200, r.text
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                if message.get("id") == self._ids:
                    return message
        raise AssertionError(f"no response in {r.text!r}")

    async def get_stream(self, last_event_id: str | None = None
                         ) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """(event id, message) of each JSON-RPC message on the GET stream."""
        extra = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with aconnect_sse(self.client, "GET", "/mcp",
                                headers=self.headers(**extra)) as source:
            assert source.response.status_code == 200
            async for event in source.aiter_sse():
                if event.data.strip():
                    yield event.id, json.loads(event.data)


async def _updated_uri(stream: AsyncIterator[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    async for event_id, message in stream:
        if message.get("method") == "notifications/resources/updated":
            return event_id, str(message["params"]["uri"])
    raise AssertionError("GET stream ended")


async def test_missing_key_is_a_clear_401(server: Harness) -> None:
    r = await server.client.post("/mcp", json=_init_body(), headers={"Accept": ACCEPT})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert "Authorization: Bearer cola_" in r.json()["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_bad_revoked_or_reviewer_credentials_are_refused(server: Harness) -> None:
    token = await server.reviewer_token()
    tenant = await admin.get_or_create_tenant(server.runtime.db, "acme")
    row, revoked = await admin.create_api_key(server.runtime.db, tenant, "retired")
    accepted = await server.client.post("/mcp", json=_init_body(), headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {revoked}"})
    assert accepted.status_code == 200, accepted.text  # a good key, until revoked
    await admin.revoke_api_key(server.runtime.db, row.id)
    for credential in ("cola_" + "x" * 43, token, "nonsense", revoked):
        for headers in ({"Authorization": f"Bearer {credential}"}, {"X-API-Key": credential}):
            r = await server.client.post("/mcp", json=_init_body(),
                                         headers={"Accept": ACCEPT, **headers})
            assert r.status_code == 401, (credential, r.text)
            assert "API key" in r.json()["message"]


async def test_a_reviewer_token_is_told_mcp_takes_an_api_key(server: Harness) -> None:
    """The newcomer who pastes the reviewer token is told which credential MCP wants."""
    token = await server.reviewer_token()
    r = await server.client.post("/mcp", json=_init_body(), headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "not a reviewer token" in r.json()["message"]
    assert "colaflow-mcp keys create" in r.json()["message"]


async def test_x_api_key_header_is_accepted(server: Harness) -> None:
    key = await server.agent_key()
    r = await server.client.post("/mcp", json=_init_body(),
                                 headers={"Accept": ACCEPT, "X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.headers["mcp-session-id"]


async def test_unknown_host_is_421_and_foreign_origin_403(server: Harness) -> None:
    key = await server.agent_key()
    base = {"Accept": ACCEPT, "Authorization": f"Bearer {key}"}
    r = await server.client.post("/mcp", json=_init_body(),
                                 headers={**base, "Host": "evil.example"})
    assert r.status_code == 421
    assert "COLAFLOW_ALLOWED_HOSTS" in r.json()["message"]
    r = await server.client.post("/mcp", json=_init_body(),
                                 headers={**base, "Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await server.client.post("/mcp", json=_init_body(),
                                 headers={**base, "Origin": "http://localhost:6274"})
    assert r.status_code == 200


@pytest.mark.parametrize("allowed", [("mcp.example.com",), ("*",)])
async def test_configured_host_names_are_served(tmp_path: Path, allowed: tuple[str, ...]
                                                ) -> None:
    settings = fast_settings(f"sqlite:///{tmp_path / 'hosts.db'}", allowed_hosts=allowed,
                             allowed_origins=("https://app.example.com",))
    async with live_server(settings) as h:
        key = await h.agent_key()
        headers = {"Accept": ACCEPT, "Authorization": f"Bearer {key}",
                   "Host": "mcp.example.com:8443", "Origin": "https://app.example.com"}
        r = await h.client.post("/mcp", json=_init_body(), headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "mcp-session-id" in r.headers["access-control-expose-headers"].lower()


def test_host_and_origin_rules() -> None:
    assert host_allowed("127.0.0.1:8000", ())
    assert host_allowed("localhost", ())
    assert host_allowed("[::1]:9000", ())
    assert not host_allowed("example.com", ())
    assert not host_allowed(None, ())
    assert host_allowed("example.com:443", ("example.com",))
    assert host_allowed("example.com:443", ("example.com:443",))
    assert not host_allowed("example.com:444", ("example.com:443",))
    assert host_allowed("example.com:444", ("example.com:*",))
    assert not host_allowed("evil.com", ("example.com",))
    assert host_allowed("anything", ("*",))
    assert origin_allowed(None, ())
    assert origin_allowed("http://localhost:3000", ())
    assert origin_allowed("http://127.0.0.1", ())
    assert not origin_allowed("https://evil.example", ())
    assert origin_allowed("https://app.example.com/", ("https://app.example.com",))
    assert origin_allowed("https://x.example", ("*",))


async def test_a_session_cannot_be_used_with_another_key(server: Harness) -> None:
    owner = RawSession(server.client, await server.agent_key())
    await owner.open()
    for other_key in (await server.agent_key(), await server.agent_key("globex")):
        thief = RawSession(server.client, other_key)
        thief.session_id = owner.session_id
        r = await server.client.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
            headers=thief.headers())
        assert r.status_code == 404
    assert (await owner.request("tools/list", {}))["result"]["tools"]


async def test_an_update_sent_before_the_get_stream_opens_is_not_lost(server: Harness) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    session = RawSession(server.client, key)
    await session.open()
    change = await server.propose(key)
    result = await session.request("resources/subscribe", {"uri": change["resourceUri"]})
    assert "error" not in result, result
    assert (await server.approve(token, change["id"])).status_code == 200
    with anyio.fail_after(10):
        _, uri = await _updated_uri(session.get_stream())
    assert uri == change["resourceUri"]


async def _session_subscribed_to_two(
    server: Harness,
) -> tuple[RawSession, str, dict[str, Any], dict[str, Any]]:
    """A legacy session subscribed to two fresh changes; a reviewer token to decide them."""
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    session = RawSession(server.client, key)
    await session.open()
    x, y = await server.propose(key), await server.propose(key)
    for change in (x, y):
        assert "error" not in await session.request("resources/subscribe",
                                                     {"uri": change["resourceUri"]})
    return session, token, x, y


async def test_a_dropped_get_stream_resumes_with_last_event_id(server: Harness) -> None:
    session, token, x, y = await _session_subscribed_to_two(server)
    with anyio.fail_after(10):
        stream = session.get_stream()
        first = anext(stream)
        async with anyio.create_task_group() as tg:
            got: list[tuple[str, dict[str, Any]]] = []

            async def read_one() -> None:
                got.append(await first)

            tg.start_soon(read_one)
            assert (await server.approve(token, x["id"])).status_code == 200
        await stream.aclose()  # the stream drops
        (x_event_id, x_message), = got
        assert x_message["params"]["uri"] == x["resourceUri"]
        assert (await server.approve(token, y["id"])).status_code == 200
        _, uri = await _updated_uri(session.get_stream(last_event_id=x_event_id))
    assert uri == y["resourceUri"]


async def test_event_store_replays_only_its_stream_and_forgets_the_oldest() -> None:
    from mcp.server.streamable_http import EventMessage

    store = SessionEventStore(capacity=3)
    note: Any = {"jsonrpc": "2.0", "method": "notifications/resources/updated"}
    r1 = await store.store_event("7", note)
    await store.store_event("8", note)
    r3 = await store.store_event("7", note)
    sent: list[str | None] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event.event_id)

    assert await store.replay_events_after(r1, collect) == "7"
    assert sent == [r3]
    for _ in range(3):
        await store.store_event("8", note)
    assert await store.replay_events_after(r1, collect) is None  # forgotten
    assert await store.replay_events_after("bogus", collect) is None


async def test_get_stream_is_served_from_the_store_with_no_gap_and_one_at_a_time() -> None:
    from mcp.server.streamable_http import GET_STREAM_KEY

    from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME
    from colaflow_mcp.mcp.get_stream import GetStream

    store = SessionEventStore(capacity=3)
    note: Any = {"jsonrpc": "2.0", "method": "notifications/resources/updated"}
    g1 = await store.store_event(GET_STREAM_KEY, note)
    await store.store_event("7", note)
    g3 = await store.store_event(GET_STREAM_KEY, note)
    g4 = await store.store_event(GET_STREAM_KEY, note)
    streams = [anyio.create_memory_object_stream[str | None](10) for _ in range(3)]
    ended: list[int] = []

    async def serve(n: int, last_event_id: str) -> None:
        async def send(message: Any) -> None:
            if message["type"] == "http.response.body" and message["body"]:
                await streams[n][0].send(message["body"].decode())

        async def receive() -> Any:
            await anyio.sleep_forever()  # the client stays: the server ends the stream

        after = store.get_stream_start(last_event_id)
        assert after is not None
        await GetStream(store, after, send, lambda _, event_id: event_id.encode()).serve(
            [], receive)
        ended.append(n)
        streams[n][0].close()

    async def received(n: int, count: int) -> list[str | None]:
        return [await streams[n][1].receive() for _ in range(count)]

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, 0, g1)
            assert await received(0, 2) == [g3, g4]
            g5 = await store.store_event(GET_STREAM_KEY, note)  # stored while it is open
            assert await received(0, 1) == [g5]
            # A new GET without Last-Event-ID takes over after what was already written.
            tg.start_soon(serve, 1, GET_STREAM_RESUME)
            g6 = await store.store_event(GET_STREAM_KEY, note)
            assert await received(1, 1) == [g6]
            # An id that fell off (capacity 3) resumes from what is left.
            tg.start_soon(serve, 2, "g0")
            assert await received(2, 3) == [g4, g5, g6]
            store.close()  # the session ended: so does its stream
        assert sorted(ended) == [0, 1, 2]
        assert [event async for event in streams[0][1]] == []  # the replaced one got no g6
        assert [event async for event in streams[1][1]] == []


async def test_a_new_get_stream_replaces_the_old_and_session_end_closes_it(
    server: Harness,
) -> None:
    session, token, x, y = await _session_subscribed_to_two(server)
    with anyio.fail_after(10):
        assert (await server.approve(token, x["id"])).status_code == 200
        old = session.get_stream()
        assert (await _updated_uri(old))[1] == x["resourceUri"]
        # A second GET of the session (no Last-Event-ID: x was already sent) takes over;
        # the old one ends when it does.
        new = session.get_stream()
        got: list[str] = []
        async with anyio.create_task_group() as tg:
            async def read_new() -> None:
                got.append((await _updated_uri(new))[1])

            tg.start_soon(read_new)
            assert [message async for _, message in old] == []
            assert (await server.approve(token, y["id"])).status_code == 200
        assert got == [y["resourceUri"]]
        r = await server.client.delete("/mcp", headers=session.headers())
        assert r.status_code == 200
        assert [message async for _, message in new] == []  # the session's end ends it
