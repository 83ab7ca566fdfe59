"""The decision routes' ASGI layer (rest/decide_route.py) answers exactly as the Starlette
routes behind it do: every request below is sent once to the layer (with nothing behind it
that could answer instead) and once to the Starlette routes (the layer stepped aside), and
the two answers must be the same bytes, status and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from colaflow_mcp.rest.decide_route import DecideRoute
from tests.harness import Harness

pytestmark = pytest.mark.anyio

BASE = "/api/mcp/pending-changes"


def _layer(h: Harness) -> DecideRoute:
    layer: Any = h.app.middleware_stack
    while not isinstance(layer, DecideRoute):
        layer = layer.app
    return layer


@asynccontextmanager
async def _only_the_layer(h: Harness) -> AsyncIterator[None]:
    """Nothing behind the layer answers but 599: a request it passes on shows as 599."""
    layer = _layer(h)
    behind = layer.app

    async def nobody(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b"passed on"})

    layer.app = nobody
    try:
        yield
    finally:
        layer.app = behind


@asynccontextmanager
async def _only_starlette(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The layer steps aside: every request goes to Starlette's routes, as before it."""
    with monkeypatch.context() as m:
        m.setattr(DecideRoute, "__call__",
                  lambda self, scope, receive, send: self.app(scope, receive, send))
        yield


def _seen(r: httpx.Response) -> tuple[int, str | None, str | None, bytes]:
    return (r.status_code, r.headers.get("content-type"), r.headers.get("content-length"),
            r.content)


async def _both(h: Harness, monkeypatch: pytest.MonkeyPatch, method: str, url: str,
                **kw: Any) -> tuple[int, bytes]:
    """The same request to the layer and to Starlette's routes: the same answer.
    ``stream=bytes``: the body sent in chunks, with no Content-Length."""
    stream = kw.pop("stream", None)

    async def send() -> httpx.Response:
        if stream is not None:
            kw["content"] = _chunks(stream)
        return await h.client.request(method, url, **kw)

    async with _only_the_layer(h):
        fast = await send()
    async with _only_starlette(monkeypatch):
        slow = await send()
    assert fast.status_code != 599, f"{method} {url}: not answered by the layer"
    assert _seen(fast) == _seen(slow), (url, fast.text, slow.text)
    return fast.status_code, fast.content


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


def _auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_refusals_are_answered_as_before(harness: Harness,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    await h.project()
    key, token = await h.agent_key(), await h.reviewer_token()
    foreign = await h.reviewer_token("globex", "mallory")
    c = (await h.propose(key))["id"]
    await h.client.get("/health/live")  # the middleware stack is built
    limit = h.settings.max_body_bytes
    big = b'{"reason": "' + b"x" * limit + b'"}'
    at_limit = b'{"reason": "' + b"x" * (limit - 14) + b'"}'  # too long a reason: 400
    assert len(at_limit) == limit

    cases: list[tuple[int, str, dict[str, Any]]] = [
        (401, f"{BASE}/{c}/approve", {}),
        (401, f"{BASE}/{c}/reject", {"headers": _auth("cfk_not-a-key")}),
        (401, f"{BASE}/{c}/approve", {"headers": _auth("a.b.c")}),
        (401, f"{BASE}/{c}/approve", {"headers": {"X-API-Key": token}}),
        (401, f"{BASE}/{c}/approve", {"headers": {"Authorization": f"Basic {token}"}}),
        (403, f"{BASE}/{c}/approve", {"headers": _auth(key)}),
        (403, f"{BASE}/{c}/reject", {"headers": {"X-API-Key": key}, "json": {"reason": "r"}}),
        (404, f"{BASE}/{c}/approve", {"headers": _auth(foreign)}),
        (404, f"{BASE}/{c}/reject", {"headers": _auth(foreign), "json": {"reason": "r"}}),
        (404, f"{BASE}/00000000-0000-4000-8000-000000000000/approve",
         {"headers": _auth(token)}),
        (400, f"{BASE}/not-a-uuid/approve", {"headers": _auth(token)}),
        (400, f"{BASE}/%27%20OR%201%3D1/reject", {"headers": _auth(token),
                                                   "json": {"reason": "r"}}),
        (400, f"{BASE}/{'x' * 300}/approve", {"headers": _auth(token)}),
        (413, f"{BASE}/{c}/reject", {"headers": _auth(token), "content": big}),
        (400, f"{BASE}/{c}/reject", {"headers": _auth(token), "content": at_limit}),
        (413, f"{BASE}/{c}/reject", {"headers": _auth(token), "content": at_limit + b" "}),
        (413, f"{BASE}/{c}/reject", {"headers": _auth(token), "stream": big}),
        (400, f"{BASE}/{c}/reject", {"headers": _auth(token), "stream": at_limit}),
        (413, f"{BASE}/{c}/reject", {"headers": _auth(token), "stream": at_limit + b" "}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "content": b"{"}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "content": b"[1]"}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "content": b'{"a": NaN}'}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "content": b"\xff\xfe"}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "json": {"arguments": 5}}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token), "json": {"argument": {}}}),
        (400, f"{BASE}/{c}/approve", {"headers": _auth(token),
                                      "json": {"arguments": {"project_key": "NOPE"}}}),
        (400, f"{BASE}/{c}/reject", {"headers": _auth(token)}),
        (400, f"{BASE}/{c}/reject", {"headers": _auth(token), "json": {"reason": ""}}),
    ]
    for status, url, kw in cases:
        got, body = await _both(h, monkeypatch, "POST", url, **kw)
        assert got == status, (url, kw, body)
    r = await h.client.get(f"{BASE}/{c}", headers=_auth(token))
    assert r.json()["status"] == "Pending"  # none of it decided anything


async def test_decisions_and_repeats_are_answered_as_before(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    await h.project()
    key, token = await h.agent_key(), await h.reviewer_token()
    await h.client.get("/health/live")
    edit = {"arguments": {"project_key": "WEB", "title": "Login — ça marche ✓"}}
    no = {"reason": "nö, später ✓"}
    for verb, body in (("approve", None), ("approve", edit), ("reject", no)):
        answers = []
        for route in (_only_the_layer(h), _only_starlette(monkeypatch)):
            cid = (await h.propose(key))["id"]
            async with route:
                r = await h.client.post(f"{BASE}/{cid}/{verb}", headers=_auth(token),
                                        json=body)
                again = await h.client.post(f"{BASE}/{cid}/{verb}", headers=_auth(token),
                                            json=body or {"reason": "x"})
            assert r.status_code == 200, r.text
            stored = await h.client.get(f"{BASE}/{cid}", headers=_auth(token))
            # The answer is the change as stored, in the same bytes as a GET gives it.
            assert r.content == stored.content
            answers.append((r.headers["content-type"], sorted(r.json()),
                            r.json()["status"], r.json()["arguments"], _seen(again)))
        assert answers[0] == answers[1]
        assert answers[0][4][0] == 409


async def test_other_requests_pass_the_layer(harness: Harness) -> None:
    h = harness
    await h.project()
    key, token = await h.agent_key(), await h.reviewer_token()
    c = (await h.propose(key))["id"]
    await h.client.get("/health/live")
    async with _only_the_layer(h):
        for method, url in (("GET", f"{BASE}/{c}/approve"), ("POST", f"{BASE}/{c}/approve/"),
                            ("POST", f"{BASE}/{c}/approved"), ("GET", f"{BASE}/{c}"),
                            ("POST", f"{BASE}/{c}/x/reject")):
            r = await h.client.request(method, url, headers=_auth(token))
            assert r.status_code == 599, (method, url)
