"""A modern request's SDK runner is freed by reference counting when the request returns
(``sdk_hooks`` hook 12, issue 14): ``ServerRunner.on_request`` cached on the runner made
each runner a cycle, so every ``server/discover``, tool call or listen prelude left its
runner, ``Connection``, exit stack and parsed client params for the cyclic collector, and
a burst of them grew the heap by up to ~10 MiB that held listeners then kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from operator import attrgetter
from typing import Any

import anyio
import pytest
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner

from colaflow_mcp.mcp import sdk_hooks
from tests.harness import Harness
from tests.mcp.test_mcp_direct_listen import META, _headers, _listen

pytestmark = pytest.mark.anyio


@contextmanager
def collector_off() -> Iterator[None]:
    """Only reference counting frees objects meanwhile."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _runners() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, ServerRunner))


async def _modern_requests(h: Harness, key: str, pending: str) -> None:
    for n in range(5):
        r = await h.client.post("/mcp", json={
            "jsonrpc": "2.0", "id": n, "method": "server/discover", "params": {"_meta": META}},
            headers=_headers(key, **{"Mcp-Method": "server/discover"}))
        assert r.status_code == 200 and "result" in r.text, r.text
    with anyio.fail_after(20):
        async with h.client.stream("POST", "/mcp", json=_listen([pending]),
                                   headers=_headers(key)) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                if b"\r\n\r\n" in chunk:  # the ack
                    break


def _cached(name: str) -> Any:
    prop = cached_property(attrgetter(f"_{name}"))
    prop.__set_name__(ServerRunner, name)
    return prop


async def test_modern_requests_leave_no_runner_for_the_collector(
        server: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await server.project()
    key = await server.agent_key()
    pending = (await server.propose(key))["resourceUri"]
    await _modern_requests(server, key, pending)  # the first requests' lazy set-up done
    with collector_off():
        before = _runners()
        await _modern_requests(server, key, pending)
        assert _runners() == before
    # The same requests with the SDK's cached properties back: runners wait for the
    # collector (what the hook removes; the test would fail without it).
    monkeypatch.setattr(ServerRunner, "on_request", _cached("on_request"))
    monkeypatch.setattr(ServerRunner, "on_notify", _cached("on_notify"))
    with collector_off():
        before = _runners()
        await _modern_requests(server, key, pending)
        assert _runners() >= before + 5


def test_the_hook_keeps_the_runners_methods_and_is_idempotent() -> None:
    sdk_hooks.runners_freed_by_refcount()
    sdk_hooks.runners_freed_by_refcount()
    assert isinstance(ServerRunner.__dict__["on_request"], property)
    assert isinstance(ServerRunner.__dict__["on_notify"], property)
    runner = ServerRunner(server=None, connection=Connection.from_envelope(  # type: ignore[arg-type]
        "2026-07-28", None, None), lifespan_state=None)
    assert runner.on_request == runner._on_request
    assert runner.on_notify == runner._on_notify
    ref = weakref.ref(runner)
    with collector_off():
        del runner
        assert ref() is None
