"""Hub connections outlive the request-head deadline: it bounds only unfinished heads."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from hubenv import HubEnv, ServerFactory, Tenant
from hubwire import HANDSHAKE, RS, frames, msg, open_ws

pytestmark = pytest.mark.anyio
BOUND = 0.4  # the header timeout in this test


def subscribe_message(cid: str) -> str:
    return msg({"type": 1, "invocationId": "1", "target": "SubscribeToPendingChange",
                "arguments": [cid]})


async def canary_closed(port: int) -> None:
    """A bare connection, closed by the deadline: proof that a header timeout has passed."""
    async with await anyio.connect_tcp("127.0.0.1", port) as canary:
        with anyio.fail_after(BOUND + 5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await canary.receive()


async def negotiated_url(http: httpx.AsyncClient, env: HubEnv, t: Tenant) -> str:
    r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1")
    return f"{env.hub_url}?id={r.json()['connectionToken']}"


async def test_websocket_sse_and_held_long_poll_outlive_the_header_timeout(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(http_header_timeout_seconds=BOUND,
                              hub_long_poll_seconds=30.0) as env:
        t = await env.tenant("acme")
        cid = await env.propose(t)
        ws = await open_ws(env.ws_url, t.key)
        assert (await ws.invoke("SubscribeToPendingChange", cid))["result"]["id"] == cid
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {t.key}"}
                                     ) as http, anyio.create_task_group() as tg:
            # Server-Sent Events: one stream for the whole test.
            sse_url = await negotiated_url(http, env, t)
            sse_cm = http.stream("GET", sse_url, headers={"Accept": "text/event-stream"})
            sse = await sse_cm.__aenter__()
            sse_lines = sse.aiter_lines()
            await http.post(sse_url, content=HANDSHAKE + subscribe_message(cid))

            async def next_sse_frame() -> dict[str, Any]:
                async for line in sse_lines:
                    if line.startswith("data: "):
                        return frames(line[len("data: "):])[0]
                raise AssertionError("the SSE stream ended")

            with anyio.fail_after(5):
                assert await next_sse_frame() == {}
                assert (await next_sse_frame())["type"] == 3
            # Long polling: a poll held from before the deadline passes until the event.
            lp_url = await negotiated_url(http, env, t)
            await http.get(lp_url)
            await http.post(lp_url, content=HANDSHAKE)
            assert (await http.get(lp_url)).text == "{}" + RS
            await http.post(lp_url, content=subscribe_message(cid))
            assert frames((await http.get(lp_url)).text)[0]["type"] == 3
            held: list[httpx.Response] = []

            async def hold_poll() -> None:
                held.append(await http.get(lp_url))

            tg.start_soon(hold_poll)
            await canary_closed(env.port)  # every connection above is older than the bound
            await env.approve(t, cid)
            with anyio.fail_after(10):
                event = await ws.drain_until(lambda f: f.get("type") == 1)
                assert event["target"] == "PendingChangeApproved"
                assert (await next_sse_frame())["target"] == "PendingChangeApproved"
            await sse_cm.__aexit__(None, None, None)
        assert held[0].status_code == 200
        assert frames(held[0].text)[0]["target"] == "PendingChangeApproved"
        await ws.ws.close()
