"""A modern ``subscriptions/listen`` stream is served by the endpoint once the SDK's pipeline
has acked it (issue 14, ``sdk_hooks`` hook 11): the held stream keeps no SDK task, runner
or memory stream. Every request the SDK would refuse still goes to the SDK and gets its
answer; what a served stream sends is byte for byte what the SDK's path sent. Compared
against the same server with the direct path turned off (the SDK's path, as before)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest

from colaflow_mcp.http_protocols import HeldConnection
from colaflow_mcp.mcp import endpoint as endpoint_module
from colaflow_mcp.mcp import listen_stream, sdk_hooks
from colaflow_mcp.mcp.endpoint import McpEndpoint
from colaflow_mcp.mcp.listen_stream import DirectListen
from tests.harness import Harness, fast_settings, live_server
from tests.mcp.mcpenv import Updates, mcp_client, revoke_agent_key, watching

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}
PREFIX = "colaflow://pending-changes/"
# Frames of the SDK's modern entry that a listen served through it keeps while it is held.
SDK_PATH = ("handle_modern_request", "serve_one", "ServerRunner._on_request")


def _endpoint(h: Harness) -> McpEndpoint:
    endpoint: McpEndpoint = h.runtime.mcp
    return endpoint


class DirectCount:
    """How many listen streams the endpoint served directly."""

    def __init__(self) -> None:
        self.served = 0
        self.detached = 0  # of those, detached from their request (``HeldConnection``)
        self.open: list[DirectListen] = []
        self.ended = anyio.Event()  # a served stream's request returned


@contextmanager
def direct_path(h: Harness, on: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[DirectCount]:
    """Count the direct path's listen streams; with ``on=False`` every listen takes the
    SDK's path (the endpoint as it was before hook 11)."""
    endpoint = _endpoint(h)
    count = DirectCount()

    class Counted(DirectListen):
        __slots__ = ()

        async def serve(self, *args: Any) -> None:
            count.served += 1
            count.open.append(self)
            await super().serve(*args)
            count.detached += self.held is not None

        def ended(self) -> None:  # the stream is over, served detached or not
            if self in count.open:
                count.open.remove(self)
                count.ended.set()
            super().ended()

    async def off(scope: Any, headers: Any, principal: Any, receive: Any, send: Any) -> Any:
        return receive

    with monkeypatch.context() as m:
        m.setattr(endpoint_module, "DirectListen", Counted)
        if not on:
            m.setattr(endpoint, "_serve_listen", off)
        yield count


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "subscriptions/listen", **extra}


def _listen(uris: list[str], request_id: Any = "listen-1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "subscriptions/listen",
            "params": {"notifications": {"resourceSubscriptions": uris}, "_meta": META}}


class Held:
    """A listen stream read raw: every byte, and a wait for the next complete frame."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.received = b""
        self._chunks = response.aiter_raw()

    async def frames(self, n: int) -> None:
        """Read until ``n`` complete frames arrived (bounded by the caller)."""
        while self.received.count(b"\r\n\r\n") < n:
            self.received += await anext(self._chunks)

    async def to_end(self) -> None:
        async for chunk in self._chunks:
            self.received += chunk


async def _listen_through(h: Harness, key: str, token: str, uris: list[str], new: str
                          ) -> tuple[int, list[tuple[str, str]], bytes]:
    """Listen to ``uris``; read the ack and the already-decided update; approve ``new``,
    read its update; revoke the key and read to the end of the stream."""
    with anyio.fail_after(20):
        async with h.client.stream("POST", "/mcp", json=_listen(uris),
                                   headers=_headers(key)) as r:
            held = Held(r)
            await held.frames(2)  # the ack, the update of the change decided before
            assert (await h.approve(token, new.removeprefix(PREFIX))).status_code == 200
            await held.frames(3)
            principal = await h.runtime.auth.authenticate(key)
            assert principal is not None and principal.api_key_id is not None
            await revoke_agent_key(h, key)
            await _endpoint(h).drop_revoked({principal.api_key_id}, 0)
            await held.to_end()
            head = [(k, v) for k, v in r.headers.multi_items() if k != "date"]
            return r.status_code, head, held.received


async def test_a_listen_stream_is_served_directly_with_the_sdk_paths_bytes(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await server.project()
    token = await server.reviewer_token()
    owner = await server.agent_key()
    decided = await server.propose(owner)
    assert (await server.approve(token, decided["id"])).status_code == 200
    await server.project("globex")
    foreign = await server.propose(await server.agent_key("globex"))
    served = {}
    # The SDK's path; served directly, held by the request's task; served and detached.
    for path in ("sdk", "task", "detached"):
        on = path != "sdk"
        key = await server.agent_key(name=f"listener-{path}")
        new = (await server.propose(key))["resourceUri"]
        uris = [decided["resourceUri"], new, foreign["resourceUri"], PREFIX + "nope",
                "colaflow://projects", "https://example.com/x", decided["resourceUri"]]
        with direct_path(server, on, monkeypatch) as direct, monkeypatch.context() as m:
            if path == "task":
                m.setattr(endpoint_module, "detach_of", lambda scope: None)
            status, head, body = await _listen_through(server, key, token, uris, new)
            assert direct.served == (1 if on else 0)
            assert direct.detached == (1 if path == "detached" else 0)
            if on:
                with anyio.fail_after(10):
                    await direct.ended.wait()  # the final frame ended the request
        served[path] = (status, head, body.replace(new.encode(), b"<new>"))
    assert served["sdk"] == served["task"] == served["detached"]
    status, head, body = served["detached"]
    frames = [json.loads(f.removeprefix(b"event: message\r\ndata: "))
              for f in body.split(b"\r\n\r\n") if f]
    assert status == 200 and ("content-type", "text/event-stream") in head
    ack, first, second, final = frames
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"]["resourceSubscriptions"] == [
        decided["resourceUri"], "<new>"]
    assert first["params"]["uri"] == decided["resourceUri"]
    assert second["params"]["uri"] == "<new>"
    assert final["id"] == "listen-1" and "result" in final
    assert _endpoint(server).subscriptions.listen_streams == set()


async def _answer(h: Harness, body: bytes, headers: Any, method: str = "POST"
                  ) -> tuple[int, str | None, str]:
    with anyio.fail_after(10):
        r = await h.client.request(method, "/mcp", content=body, headers=headers)
    return r.status_code, r.headers.get("content-type"), r.text


async def test_listens_the_sdk_refuses_get_the_sdks_answer(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrong Accept or Content-Type, bad JSON, bad JSON-RPC, a notification, bad params, a
    header that disagrees with the body or comes twice, an unknown version, too many URIs,
    a body over the limit, a GET, a revoked key: not served directly, answered exactly as
    the SDK answers them."""
    await server.project()
    key = await server.agent_key()
    revoked = await server.agent_key(name="retired")
    await revoke_agent_key(server, revoked)
    uri = (await server.propose(key))["resourceUri"]
    endpoint = _endpoint(server)
    too_many = [f"{PREFIX}{i}" for i in range(endpoint.subscriptions.max_per_session + 1)]
    good = json.dumps(_listen([uri])).encode()
    no_meta = _listen([uri])
    del no_meta["params"]["_meta"]
    bad_params = _listen([uri])
    bad_params["params"]["notifications"]["resourceSubscriptions"] = "not a list"
    no_id = _listen([uri])
    del no_id["id"]
    h = _headers(key)
    cases: dict[str, tuple[bytes, Any]] = {
        "JSON only": (good, {**h, "Accept": "application/json"}),
        "SSE only": (good, {**h, "Accept": "text/event-stream"}),
        "no Content-Type": (good, {k: v for k, v in h.items() if k != "Content-Type"}),
        "text/plain": (good, {**h, "Content-Type": "text/plain"}),
        "bad JSON": (b"{not json", h),
        "a batch": (json.dumps([_listen([uri])]).encode(), h),
        "not JSON-RPC": (json.dumps({"id": 1, "method": 5}).encode(), h),
        "a notification": (json.dumps(no_id).encode(), h),
        "no _meta": (json.dumps(no_meta).encode(), h),
        "bad params": (json.dumps(bad_params).encode(), h),
        "Mcp-Method disagrees": (good, {**h, "Mcp-Method": "tools/list"}),
        "version twice": (good, [*h.items(), ("MCP-Protocol-Version", MODERN)]),
        "unknown version": (good, {**h, "MCP-Protocol-Version": "2099-01-01"}),
        "too many URIs": (json.dumps(_listen(too_many)).encode(), h),
        "over the body limit": (json.dumps(_listen(
            [uri], "x" * (server.settings.max_body_bytes + 1))).encode(), h),
        "a revoked key": (good, _headers(revoked)),
    }
    answers: dict[bool, dict[str, tuple[int, str | None, str]]] = {}
    for on in (False, True):
        with direct_path(server, on, monkeypatch) as direct:
            answers[on] = {case: await _answer(server, body, headers)
                           for case, (body, headers) in cases.items()}
            answers[on]["a GET"] = await _answer(server, b"", h, "GET")
            assert direct.served == 0
    assert answers[True] == answers[False]
    assert answers[True]["JSON only"][0] == 406 and answers[True]["bad JSON"][0] == 400
    assert answers[True]["a notification"][0] == 202
    assert answers[True]["a revoked key"][0] == 401
    assert answers[True]["over the body limit"][0] == 413
    assert answers[True]["a GET"][0] == 405
    assert "Too many resource subscriptions" in answers[True]["too many URIs"][2]
    assert endpoint.subscriptions.listen_streams == set()


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "held-by-its-task"])
async def test_a_held_listen_keeps_no_sdk_task_and_ends_when_the_client_goes(
        server: Harness, monkeypatch: pytest.MonkeyPatch, detach: bool) -> None:
    """Detached (uvicorn through ``http_protocols``), a held listen keeps no task at all and
    its connection is a ``HeldConnection``; where the server cannot detach, the request's
    own task waits, with no SDK frame on it. Either way the client's going ends it."""
    if not detach:
        monkeypatch.setattr(endpoint_module, "detach_of", lambda scope: None)
    await server.project()
    key = await server.agent_key()
    uri = (await server.propose(key))["resourceUri"]
    endpoint = _endpoint(server)
    notifier = server.runtime.notifier

    def held_paths() -> list[list[str]]:
        paths = []
        for task in asyncio.all_tasks():
            names, awaited = [], task.get_coro()
            while awaited is not None and hasattr(awaited, "cr_code"):
                names.append(awaited.cr_code.co_qualname)
                awaited = awaited.cr_await
            if any(name in SDK_PATH or name.startswith("DirectListen") for name in names):
                paths.append(names)
        return paths

    with direct_path(server, True, monkeypatch) as direct:
        async with server.client.stream("POST", "/mcp", json=_listen([uri]),
                                        headers=_headers(key)) as r:
            assert r.status_code == 200
            with anyio.fail_after(10):
                await Held(r).frames(1)
            (listener,) = direct.open
            if detach:
                assert held_paths() == []
                assert isinstance(listener.held, HeldConnection)
                assert listener.task is None
            else:
                (path,) = held_paths()
                assert [name for name in path if name in SDK_PATH] == [], path
                assert listener.held is None
            assert listener in endpoint.keepalive.streams  # pinged by the endpoint's pinger
            assert listener.writer is None  # no sender while idle
            assert notifier.subscriber_count() == 1
            assert len(endpoint.subscriptions.listen_streams) == 1
        # The client went: the stream ends and forgets its subscriptions.
        with anyio.fail_after(10):
            await direct.ended.wait()
    assert listener not in endpoint.keepalive.streams
    assert endpoint.subscriptions.listen_streams == set()
    assert notifier.subscriber_count() == 0


async def test_a_listen_stream_is_pinged_as_the_sdk_pings_it(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint's pinger sends the SDK's keep-alive comment on a served stream."""
    await server.project()
    key = await server.agent_key()
    uri = (await server.propose(key))["resourceUri"]
    endpoint = _endpoint(server)
    with direct_path(server, True, monkeypatch) as direct:
        async with server.client.stream("POST", "/mcp", json=_listen([uri]),
                                        headers=_headers(key)) as r:
            held = Held(r)
            with anyio.fail_after(10):
                await held.frames(1)
                (listener,) = direct.open
                await endpoint.keepalive._ping(listener)
                await held.frames(2)
    assert held.received.endswith(b"\r\n\r\n: ping\r\n\r\n")


async def test_the_mcp_client_hears_an_approval_once_on_a_served_stream(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    updates = Updates()
    with direct_path(server, True, monkeypatch) as direct:
        async with mcp_client(server, key, "modern") as client:
            change = await server.propose(key)
            async with watching(client, "modern", updates, [change["resourceUri"]]) as honored:
                assert honored == [change["resourceUri"]]
                assert direct.served == 1
                assert (await server.approve(token, change["id"])).status_code == 200
                with anyio.fail_after(10):
                    await updates.wait_for(change["resourceUri"])
                # Another decision of the same tenant, heard by nobody; the stream stays.
                other = await server.propose(key)
                assert (await server.approve(token, other["id"])).status_code == 200
                assert len(direct.open) == 1
    assert updates.uris == [change["resourceUri"]]


async def test_a_failed_sender_ends_the_stream_and_its_subscriptions(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    change = await server.propose(key)
    endpoint = _endpoint(server)

    def broken(uri: str, request_id: Any) -> bytes:
        raise ValueError("cannot frame this")

    with direct_path(server, True, monkeypatch) as direct:
        monkeypatch.setattr(listen_stream, "encode_update", broken)
        async with server.client.stream("POST", "/mcp", json=_listen([change["resourceUri"]]),
                                        headers=_headers(key)) as r:
            with anyio.fail_after(10):
                await Held(r).frames(1)
                assert (await server.approve(token, change["id"])).status_code == 200
                await direct.ended.wait()
    assert endpoint.subscriptions.listen_streams == set()
    assert server.runtime.notifier.subscriber_count() == 0


async def test_a_served_listen_stream_does_not_hold_up_shutdown(database_url: str) -> None:
    """uvicorn's graceful shutdown (2 s here) ends a held direct listen stream, as it ends
    the SDK's: the server stops, the stream's subscriptions are gone."""
    acked, ended = anyio.Event(), anyio.Event()
    received = b""

    async def hold(base_url: str, key: str, uri: str) -> None:
        nonlocal received
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as c, \
                c.stream("POST", "/mcp", json=_listen([uri]), headers=_headers(key)) as r:
            try:
                async for chunk in r.aiter_raw():
                    received += chunk
                    if b"\r\n\r\n" in received:
                        acked.set()
            except httpx.HTTPError:
                pass  # cut by the server
        ended.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            async with live_server(fast_settings(database_url)) as h:
                await h.project()
                key = await h.agent_key()
                uri = (await h.propose(key))["resourceUri"]
                endpoint = _endpoint(h)
                tg.start_soon(hold, h.base_url, key, uri)
                await acked.wait()
                assert any(isinstance(s, DirectListen) for s in endpoint.keepalive.streams)
                assert len(endpoint.subscriptions.listen_streams) == 1
            # The server has stopped (graceful 2 s, then its tasks are cancelled).
            await ended.wait()
    assert endpoint.subscriptions.listen_streams == set()
    assert server_notifier_is_empty(endpoint)
    assert b"notifications/subscriptions/acknowledged" in received


def server_notifier_is_empty(endpoint: McpEndpoint) -> bool:
    return endpoint.subscriptions.notifier.subscriber_count() == 0


async def test_other_modern_requests_are_not_read_before_the_sdk(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    key = await server.agent_key()
    reads = []
    original = sdk_hooks.read_body

    async def counted(*args: Any) -> Any:
        reads.append(args)
        return await original(*args)

    monkeypatch.setattr(sdk_hooks, "read_body", counted)
    r = await server.client.post("/mcp", json={
        "jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": META}},
        headers=_headers(key, **{"Mcp-Method": "server/discover"}))
    assert r.status_code == 200 and "result" in r.text, r.text
    assert reads == []
