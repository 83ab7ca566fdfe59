"""SSE keep-alive for every legacy MCP stream from one task, instead of a task per stream.

The SDK serves legacy (2025-era) SSE responses with sse-starlette, which starts a ping task
for each open stream: ~5 KiB of task, coroutine frames and cancel scope per idle session,
the largest single item of an idle session that is configurable (issue 14). That task is
turned off (``sdk_hooks.disable_sse_ping_tasks``) and :class:`SseKeepAlive` sends the same
SSE comment on every open stream of a session every ``interval`` seconds, so a proxy's
idle-read timeout does not cut a quiet stream and a vanished client is still noticed (the
write fails, uvicorn reports the disconnect, the stream ends).

2026-07-28 responses are not sse-starlette's: the SDK pings those in the request's own task
(every 15 s of silence), except the listen streams the endpoint serves itself
(``listen_stream.DirectListen``, hook 11), which are pinged here with the same comment.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio
from starlette.types import Message, Send

logger = logging.getLogger(__name__)

PING = b": ping\r\n\r\n"
# A ping waits at most this long for a slow client's socket buffer to drain: one stuck
# client cannot hold up the others' pings.
PING_SEND_BOUND_SECONDS = 0.5


def _is_sse(message: Message) -> bool:
    return message.get("status") == 200 and any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in message.get("headers", ()))


class Pingable(Protocol):
    """An open SSE response: pinged by sending on it."""

    send: Send


class Stream:
    """One response that may become an open SSE stream."""

    __slots__ = ("send",)

    def __init__(self, send: Send) -> None:
        self.send = send


class SseKeepAlive:
    """Pings every open SSE response it tracks, every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.streams: set[Pingable] = set()  # SSE responses started and not yet ended

    def track(self, send: Send) -> tuple[Send, Stream]:
        """``send`` that registers the response once it starts as SSE and unregisters it
        with its last body message; ``untrack`` the stream when the request returns."""
        stream = Stream(send)
        streams = self.streams

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                if _is_sse(message):
                    streams.add(stream)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                streams.discard(stream)
            await send(message)

        return tracked, stream

    def untrack(self, stream: Pingable) -> None:
        self.streams.discard(stream)

    def add(self, stream: Pingable) -> None:
        """An SSE response that started (its head is sent): pinged until ``untrack``."""
        self.streams.add(stream)

    async def run(self) -> None:
        """Ping every tracked stream each interval, until cancelled."""
        while True:
            await anyio.sleep(self.interval)
            for stream in list(self.streams):
                if stream in self.streams:  # not ended while an earlier ping waited
                    await self._ping(stream)

    @staticmethod
    async def _ping(stream: Pingable) -> None:
        with anyio.move_on_after(PING_SEND_BOUND_SECONDS):
            try:
                await stream.send({"type": "http.response.body", "body": PING,
                                   "more_body": True})
            except (OSError, RuntimeError) as exc:  # ended or disconnected meanwhile
                logger.debug("SSE keep-alive not sent: %s", exc)


__all__ = ["PING", "SseKeepAlive"]
