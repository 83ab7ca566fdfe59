"""Raw HTTP tests: negotiate, long polling and Server-Sent Events status codes and framing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from hubenv import HubEnv, ServerFactory, Tenant
from hubwire import HANDSHAKE, RS, frames, msg

from colaflow_mcp.hub.connection import HubConnection

pytestmark = pytest.mark.anyio


class ServerSteps:
    """Wakes a test when any hub connection begins a poll or a send, so it can wait, with a
    bound, for the server to reach a state it then checks (a held poll, a send in
    progress). Not ``wait_all_tasks_blocked``: with the server's background loops running,
    a moment at which every task is blocked need not come within the bound."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._event = anyio.Event()
        for name in ("begin_poll", "begin_send"):
            original = getattr(HubConnection, name)

            def wrapped(conn: HubConnection, *args: Any, _original: Any = original) -> Any:
                result = _original(conn, *args)
                self._event.set()
                self._event = anyio.Event()
                return result

            monkeypatch.setattr(HubConnection, name, wrapped)

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        with anyio.fail_after(seconds):
            while not condition():
                await self._event.wait()


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> ServerSteps:
    return ServerSteps(monkeypatch)


def auth(t: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {t.key}"}


async def negotiate(http: httpx.AsyncClient, env: HubEnv, t: Tenant, version: int = 1) -> str:
    r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion={version}", headers=auth(t))
    assert r.status_code == 200
    return str(r.json()["connectionToken"])


async def long_poll_connected(http: httpx.AsyncClient, env: HubEnv, t: Tenant) -> str:
    """Negotiate, open the long-polling transport and complete the handshake; the poll URL."""
    url = f"{env.hub_url}?id={await negotiate(http, env, t)}"
    await http.get(url)
    await http.post(url, content=HANDSHAKE)
    assert (await http.get(url)).text == "{}" + RS
    return url


async def test_negotiate_bodies_for_versions_0_and_1(env: HubEnv) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient() as http:
        v1 = (await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1",
                              headers=auth(t))).json()
        v0 = (await http.post(f"{env.hub_url}/negotiate", headers=auth(t))).json()
        v9 = (await http.post(f"{env.hub_url}/negotiate?negotiateVersion=9",
                              headers=auth(t))).json()
    assert v1["negotiateVersion"] == 1 and v1["connectionToken"] != v1["connectionId"]
    names = [x["transport"] for x in v1["availableTransports"]]
    assert names == ["WebSockets", "ServerSentEvents", "LongPolling"]
    assert v0["negotiateVersion"] == 0 and "connectionToken" not in v0
    assert v9["negotiateVersion"] == 1
    assert len(v1["connectionToken"]) >= 32


async def test_negotiate_needs_a_valid_key(env: HubEnv) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{env.hub_url}/negotiate")).status_code == 401
        bad = await http.post(f"{env.hub_url}/negotiate?access_token=cola_{'y' * 43}")
        assert bad.status_code == 401
        ok = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1&access_token={t.key}")
        assert ok.status_code == 200
        assert (await http.get(f"{env.hub_url}/negotiate", headers=auth(t))).status_code == 405
    assert not any(c for c in env.hub.connections.values() if c.principal.api_key_id is None)


async def test_long_polling_round_trip(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    async with httpx.AsyncClient(headers=auth(t)) as http:
        token = await negotiate(http, env, t)
        url = f"{env.hub_url}?id={token}"
        first = await http.get(url)
        assert first.status_code == 200 and first.content == b""
        assert (await http.post(url, content=HANDSHAKE)).status_code == 200
        assert (await http.get(url)).text == "{}" + RS
        await http.post(url, content=msg({"type": 1, "invocationId": "1",
                                          "target": "SubscribeToPendingChange",
                                          "arguments": [cid]}))
        [done] = frames((await http.get(url)).text)
        assert done["result"]["status"] == "Pending"
        await env.approve(t, cid)
        [event] = frames((await http.get(url)).text)
        assert event["target"] == "PendingChangeApproved"


async def test_long_polling_status_codes(server_factory: ServerFactory, steps: ServerSteps
                                         ) -> None:
    # No keep-alive ping and no poll timeout inside the test: a poll is answered only by
    # what the test does (a ping queued by the 1 s test keep-alive answered the poll the
    # test was waiting to see held, on a loaded machine).
    async with server_factory(hub_keep_alive_seconds=600.0, hub_long_poll_seconds=600.0,
                              hub_client_timeout_seconds=1200.0) as env:
        await _long_polling_status_codes(env, steps)


async def _long_polling_status_codes(env: HubEnv, steps: ServerSteps) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient(headers=auth(t), timeout=10) as http:
        assert (await http.get(env.hub_url)).status_code == 400
        assert (await http.post(env.hub_url, content=b"x")).status_code == 400
        assert (await http.get(f"{env.hub_url}?id=nope")).status_code == 404
        assert (await http.post(f"{env.hub_url}?id=nope", content=b"x")).status_code == 404
        assert (await http.delete(f"{env.hub_url}?id=nope")).status_code == 404
        token = await negotiate(http, env, t)
        url = f"{env.hub_url}?id={token}"
        # No key on a transport request: 401 even with a valid connection token.
        async with httpx.AsyncClient() as anonymous:
            assert (await anonymous.get(url)).status_code == 401
        await http.get(url)
        await http.post(url, content=HANDSHAKE)
        assert (await http.get(url)).text == "{}" + RS

        # A new poll supersedes a held one: the held one answers 204.
        results: dict[str, int] = {}
        conn = env.hub.connections[token]

        async def held() -> None:
            results["old"] = (await http.get(url)).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(held)
            await steps.until(lambda: conn.poll_active)  # the held poll has arrived
            generation = conn.poll_generation
            new_poll = tg.start_soon
            results_new: list[httpx.Response] = []

            async def newer() -> None:
                results_new.append(await http.get(url))

            new_poll(newer)
            await steps.until(lambda: conn.poll_generation != generation)
            conn.send(msg({"type": 6}))
        assert results["old"] == 204
        assert results_new[0].status_code == 200

        # DELETE ends the connection: the held poll gets 204, later requests 404.
        async with anyio.create_task_group() as tg:
            async def last_poll() -> None:
                results["last"] = (await http.get(url)).status_code

            tg.start_soon(last_poll)
            await steps.until(lambda: conn.poll_active)
            assert (await http.delete(url)).status_code == 202
        assert results["last"] == 204
        assert (await http.get(url)).status_code == 404
        assert (await http.post(url, content=HANDSHAKE)).status_code == 404


async def test_an_idle_long_poll_is_held_and_answered_the_moment_an_event_arrives(
    server_factory: ServerFactory, steps: ServerSteps,
) -> None:
    from hubwire import open_ws

    async with server_factory(hub_long_poll_seconds=30.0) as env:
        t = await env.tenant("acme")
        cid = await env.propose(t, "watched")
        async with httpx.AsyncClient(headers=auth(t), timeout=60) as http:
            url = await long_poll_connected(http, env, t)
            conn = env.hub.connections[url.split("id=", 1)[1]]
            await http.post(url, content=msg({"type": 1, "invocationId": "1",
                                              "target": "SubscribeToPendingChange",
                                              "arguments": [cid]}))
            [done] = frames((await http.get(url)).text)
            assert done["result"]["status"] == "Pending"
            # The clock: another client's change that expires half a second after the poll
            # is held; its expiry event arriving proves the poll stayed unanswered that long.
            other_client = await open_ws(env.ws_url, t.key)
            answer: list[httpx.Response] = []
            answered = anyio.Event()

            async def idle_poll() -> None:
                answer.append(await http.get(url))
                answered.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(idle_poll)
                await steps.until(lambda: conn.poll_active)  # the poll reached the server
                expiring = await env.propose(t, "expiring", expires_in=0.5)
                await other_client.invoke("SubscribeToPendingChange", expiring)
                await other_client.drain_until(
                    lambda m: m.get("target") == "PendingChangeExpired", within=10)
                assert not answered.is_set(), answer[0].text
                # An event for the held poll answers it at once, far inside the hold.
                await env.approve(t, cid)
                with anyio.fail_after(5):
                    await answered.wait()
            [event] = frames(answer[0].text)
            assert event["target"] == "PendingChangeApproved"


async def test_an_idle_long_poll_answers_200_empty_when_its_hold_ends(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_long_poll_seconds=0.2) as env:
        t = await env.tenant("acme")
        async with httpx.AsyncClient(headers=auth(t)) as http:
            url = await long_poll_connected(http, env, t)
            empty = await http.get(url)
            assert empty.status_code == 200 and empty.content == b""


async def test_long_polling_client_that_stops_polling_is_dropped(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_disconnect_timeout_seconds=0.2) as env:
        t = await env.tenant("acme")
        async with httpx.AsyncClient(headers=auth(t)) as http:
            token = await negotiate(http, env, t)
            url = f"{env.hub_url}?id={token}"
            await http.get(url)
            conn = env.hub.connections[token]
            with anyio.fail_after(5):
                await conn.closed_event.wait()
            assert (await http.post(url, content=HANDSHAKE)).status_code == 404


async def test_negotiated_connection_never_used_is_dropped(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_disconnect_timeout_seconds=0.2) as env:
        t = await env.tenant("acme")
        async with httpx.AsyncClient(headers=auth(t)) as http:
            token = await negotiate(http, env, t)
        conn = env.hub.connections[token]
        with anyio.fail_after(5):
            await conn.closed_event.wait()
        assert token not in env.hub.connections


async def test_post_limits_and_wrong_transport(server_factory: ServerFactory) -> None:
    async with server_factory(hub_max_message_bytes=512) as env:
        t = await env.tenant("acme")
        async with httpx.AsyncClient(headers=auth(t)) as http:
            token = await negotiate(http, env, t)
            url = f"{env.hub_url}?id={token}"
            await http.get(url)
            await http.post(url, content=HANDSHAKE)
            await http.get(url)
            big = await http.post(url, content=msg({"type": 1, "target": "X",
                                                    "arguments": ["z" * 1000]}))
            assert big.status_code == 413
            [close] = frames((await http.get(url)).text)
            assert close["type"] == 7 and "maximum size" in close["error"]
            assert (await http.get(url)).status_code == 204
            # SSE on a long-polling connection is refused.
            token2 = await negotiate(http, env, t)
            url2 = f"{env.hub_url}?id={token2}"
            await http.get(url2)
            sse = await http.get(url2, headers={"Accept": "text/event-stream"})
            assert sse.status_code == 400


async def test_long_polling_send_before_the_first_poll_waits_for_the_polls(
    env: HubEnv,
) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    async with httpx.AsyncClient(headers=auth(t)) as http:
        url = f"{env.hub_url}?id={await negotiate(http, env, t)}"
        # As signalrcore does: the handshake first, then the polls (ASP.NET Core buffers it).
        assert (await http.post(url, content=HANDSHAKE)).status_code == 200
        first = await http.get(url)
        assert first.status_code == 200 and first.content == b""  # the first poll: at once
        assert (await http.get(url)).text == "{}" + RS
        await http.post(url, content=msg({"type": 1, "invocationId": "1",
                                          "target": "SubscribeToPendingChange",
                                          "arguments": [cid]}))
        [done] = frames((await http.get(url)).text)
        assert done["result"]["status"] == "Pending"


async def test_server_sent_events_round_trip(env: HubEnv) -> None:
    t = await env.tenant("acme")
    cid = await env.propose(t)
    async with httpx.AsyncClient(headers=auth(t), timeout=10) as http:
        token = await negotiate(http, env, t)
        url = f"{env.hub_url}?id={token}"
        received: list[dict[str, Any]] = []
        async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            second = await http.get(url, headers={"Accept": "text/event-stream"})
            assert second.status_code == 409
            assert (await http.post(url, content=HANDSHAKE)).status_code == 200
            lines = stream.aiter_lines()
            sub = msg({"type": 1, "invocationId": "1", "target": "SubscribeToPendingChange",
                       "arguments": [cid]})
            posted = False
            with anyio.fail_after(5):
                async for line in lines:
                    if not line.startswith("data: "):
                        continue
                    received.extend(frames(line[len("data: "):]))
                    if received[-1] == {} and not posted:
                        await http.post(url, content=sub)
                        posted = True
                    elif received[-1].get("type") == 3:
                        await env.reject(t, cid, "no")
                    elif received[-1].get("type") == 1:
                        break
            assert (await http.delete(url)).status_code == 400  # SSE ends by hanging up
        assert received[-1]["target"] == "PendingChangeRejected"
        assert received[-1]["arguments"][0]["reason"] == "no"
        conn = env.hub.connections.get(token)
        if conn is not None:
            with anyio.fail_after(5):
                await conn.closed_event.wait()
        assert (await http.post(url, content=HANDSHAKE)).status_code == 404


async def test_websocket_connection_refuses_http_posts(env: HubEnv) -> None:
    from hubwire import open_ws

    t = await env.tenant("acme")
    async with httpx.AsyncClient(headers=auth(t)) as http:
        token = await negotiate(http, env, t)
        ws = await open_ws(env.ws_url, t.key, query=f"id={token}")
        r = await http.post(f"{env.hub_url}?id={token}", content=msg({"type": 6}))
        assert r.status_code == 405
        done = await ws.invoke("UnsubscribeFromPendingChange", str(uuid.uuid4()))
        assert "error" not in done


async def test_concurrent_send_is_409_and_the_connection_stays_open(
        env: HubEnv, steps: ServerSteps) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient(headers=auth(t), timeout=10) as http:
        token = await negotiate(http, env, t)
        url = f"{env.hub_url}?id={token}"
        await http.get(url)
        conn = env.hub.connections[token]
        release = anyio.Event()
        statuses: list[int] = []

        async def slow_body() -> AsyncIterator[bytes]:
            yield HANDSHAKE[:5].encode()
            await release.wait()
            yield HANDSHAKE[5:].encode()

        async def first_post() -> None:
            statuses.append((await http.post(url, content=slow_body())).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_post)
            await steps.until(lambda: conn.posting)
            second = await http.post(url, content=msg({"type": 6}))
            assert second.status_code == 409
            release.set()
        assert statuses == [200]
        assert (await http.get(url)).text == "{}" + RS


async def test_garbage_over_long_polling_closes_with_an_error(env: HubEnv) -> None:
    t = await env.tenant("acme")
    async with httpx.AsyncClient(headers=auth(t)) as http:
        url = await long_poll_connected(http, env, t)
        assert (await http.post(url, content=b"\x00\x01garbage" + RS.encode())).status_code == 200
        [close] = frames((await http.get(url)).text)
        assert close["type"] == 7 and "error" in close
        assert (await http.get(url)).status_code == 204
        # Invalid UTF-8 is refused outright.
        token2 = await negotiate(http, env, t)
        url2 = f"{env.hub_url}?id={token2}"
        await http.get(url2)
        assert (await http.post(url2, content=b"\xff\xfe" + RS.encode())).status_code == 400


async def test_sse_and_negotiate_error_statuses(env: HubEnv) -> None:
    t = await env.tenant("acme")
    sse = {"Accept": "text/event-stream"}
    async with httpx.AsyncClient(headers=auth(t)) as http:
        assert (await http.get(env.hub_url, headers=sse)).status_code == 400
        assert (await http.get(f"{env.hub_url}?id=nope", headers=sse)).status_code == 404
        bad = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=abc")
        assert bad.status_code == 400
        async with httpx.AsyncClient() as anonymous:
            anon = await anonymous.get(f"{env.hub_url}?id=x", headers=sse)
        assert anon.status_code == 401
