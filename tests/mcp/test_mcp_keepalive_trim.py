"""After a burst of new SSE streams the keep-alive's next tick gives glibc's free heap pages
back (``malloc_trim(0)``, issue 14); a trickle of streams does not trim."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from colaflow_mcp.mcp import keepalive
from colaflow_mcp.mcp.keepalive import TRIM_AFTER_STREAMS, SseKeepAlive

pytestmark = pytest.mark.anyio


class Pinged:
    """A stream that counts its pings; ``ticks`` is set after ``n`` of them."""

    def __init__(self, n: int) -> None:
        self.pings = 0
        self.n = n
        self.ticks = anyio.Event()

    async def send(self, message: Any) -> None:
        self.pings += 1
        if self.pings >= self.n:
            self.ticks.set()


async def _run(streams: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], Pinged]:
    """``streams`` streams start, then two ticks pass; the trims made at each tick."""
    trims: list[int] = []
    alive = SseKeepAlive(0.01)
    watch = Pinged(2)
    monkeypatch.setattr(keepalive, "release_free_heap", lambda: trims.append(watch.pings))
    alive.add(watch)
    for _ in range(streams - 1):
        alive.add(Pinged(10**9))
    async with anyio.create_task_group() as tg:
        tg.start_soon(alive.run)
        with anyio.fail_after(10):
            await watch.ticks.wait()
        tg.cancel_scope.cancel()
    return trims, watch


async def test_a_burst_of_streams_trims_the_heap_once_at_the_next_tick(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trims, _ = await _run(TRIM_AFTER_STREAMS, monkeypatch)
    assert trims == [1]  # after the first tick's pings, not again at the second


async def test_a_trickle_of_streams_does_not_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    trims, _ = await _run(TRIM_AFTER_STREAMS - 1, monkeypatch)
    assert trims == []


async def test_streams_started_through_track_count_and_the_real_trim_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    alive = SseKeepAlive(10.0)

    async def sink(message: Any) -> None:
        pass

    for _ in range(3):
        send, _stream = alive.track(sink)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
    send, _stream = alive.track(sink)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    assert alive.started == 3
    if keepalive.release_free_heap is not None:  # glibc: callable, and harmless
        keepalive.release_free_heap()
