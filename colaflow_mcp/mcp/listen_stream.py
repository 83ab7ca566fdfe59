"""A modern ``subscriptions/listen`` stream, served with no task while idle (issue 14).

Through the SDK, a listen request holds its modern entry's task group for the stream's
life: the handler's task with its runner, connection, session, context and parsed request,
a task waiting for the client to go, a zero-buffer memory stream between them and a
``move_on_after`` per ping interval (~50 KiB per idle listener). The endpoint runs the
SDK's pipeline only until the handler has acked (``sdk_hooks`` hook 11) and then serves the
stream here, the way ``get_stream.GetStream`` serves a legacy GET stream: the request's own
task waits for the client to go (``receive``); a sender task runs only while the
subscriber's queue holds updates, and ends when it is empty; the endpoint's one pinger
pings the stream. When the subscriber is closed (its key revoked) the sender sends what is
queued, then the SDK's final result, and the stream ends, as the SDK's does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from starlette.types import Receive, Send

from colaflow_mcp import metrics

if TYPE_CHECKING:
    from colaflow_mcp.mcp.keepalive import SseKeepAlive
    from colaflow_mcp.mcp.subscriptions import ListenStream

logger = logging.getLogger(__name__)


class DirectListen:
    """One listen stream served by the endpoint (see the module docstring)."""

    __slots__ = ("stream", "send", "encode", "final", "writer", "scope", "active", "done")

    def __init__(self, stream: ListenStream, send: Send, encode: Callable[[str], bytes],
                 final: bytes) -> None:
        self.stream = stream  # the subscriber: its URIs, its queue
        self.send = send
        self.encode = encode  # an update's frame, as the SDK's path sends it
        self.final = final  # the SDK's last frame: the listen request's result
        self.writer: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None  # the wait for the client to go
        self.active = True
        self.done = False  # the final frame is sent

    async def serve(self, headers: list[tuple[bytes, bytes]], first: list[bytes],
                    receive: Receive, pings: SseKeepAlive) -> None:
        """Send the head and ``first`` (the ack), then updates, until the client goes or
        the subscriber is closed (then the final frame) or the server cancels the task."""
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        pings.add(self)
        try:
            for frame in first:
                await self.send({"type": "http.response.body", "body": frame,
                                 "more_body": True})
            with anyio.CancelScope() as self.scope:
                self.stream.attach(self)
                self.changed()  # updates queued before the stream was attached
                while self.active:
                    if (await receive())["type"] == "http.disconnect":
                        break
        finally:
            pings.untrack(self)
            self.active = False
            self.scope = None
            writer = self.writer
            if writer is not None:
                writer.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait((writer,))

    def changed(self) -> None:
        """An update was queued, or the subscriber closed: start the sender unless one
        runs."""
        if self.active and self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    def end(self) -> None:
        """Stop waiting for the client (the request's task returns)."""
        self.active = False
        if self.scope is not None:
            self.scope.cancel()

    async def _write(self) -> None:
        stream, send = self.stream, self.send
        try:
            while self.active:
                queue = stream._queue
                if queue:
                    uri, committed = queue.popleft()
                    await send({"type": "http.response.body", "body": self.encode(uri),
                                "more_body": True})
                    metrics.notified("mcp", committed)
                    continue
                if stream.closed:
                    await send({"type": "http.response.body", "body": self.final,
                                "more_body": False})
                    self.done = True
                    self.end()
                return  # idle: the next update starts a new sender
        except (OSError, RuntimeError) as exc:  # the client went away meanwhile
            logger.debug("listen stream update not sent: %s", exc)
            self.end()
        except Exception:
            logger.exception("MCP listen stream sender failed")
            self.end()
        finally:
            self.writer = None


__all__ = ["DirectListen"]
