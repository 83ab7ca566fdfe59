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

Served by uvicorn through our ``http_protocols``, the stream does not even keep its request:
once the ack is sent it asks the server to detach the response (the ``DETACH`` scope
extension), the request's task returns, and the connection's small ``HeldConnection`` is
what sends from then on and says when the client went (:meth:`DirectListen.held_ended`).
Where the server cannot detach (another ASGI server, a pipelined request already read), the
request's task waits for the client as above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import anyio
from mcp_types import RequestId
from starlette.types import Message, Receive, Scope, Send

from colaflow_mcp import metrics
from colaflow_mcp.http import DETACH
from colaflow_mcp.mcp.sdk_hooks import encode_notification
from colaflow_mcp.mcp.subscriptions import update_notification

if TYPE_CHECKING:
    from colaflow_mcp.mcp.keepalive import SseKeepAlive
    from colaflow_mcp.mcp.subscriptions import ListenStream

logger = logging.getLogger(__name__)


_FINALS: dict[bytes, bytes] = {}
MAX_FINALS = 1024


def shared_final(frame: bytes) -> bytes:
    """``frame``, or an equal one already held: most listeners' final frames are the same
    bytes (clients number their listen requests alike)."""
    final = _FINALS.get(frame)
    if final is None:
        if len(_FINALS) >= MAX_FINALS:
            _FINALS.clear()  # a bound, not an eviction policy
        final = _FINALS[frame] = frame
    return final


class ListenOwner(Protocol):
    """Who served the stream (the endpoint): told once, when it is over."""

    def listen_ended(self, listener: DirectListen) -> None: ...


class Held(Protocol):
    """A detached response (``http_protocols.HeldConnection``): sends body messages."""

    async def __call__(self, message: Message) -> None: ...

    def close(self) -> None: ...


Detach = Callable[["DirectListen"], Held | None]


def detach_of(scope: Scope) -> Detach | None:
    """The server's ``DETACH`` extension in ``scope``, if it offers one."""
    extensions = scope.get("extensions")
    detach: Detach | None = extensions.get(DETACH) if extensions else None
    return detach


class DirectListen:
    """One listen stream served by the endpoint (see the module docstring)."""

    __slots__ = ("stream", "send", "request_id", "final", "owner", "held", "writer", "task",
                 "active", "done", "failed")

    def __init__(self, stream: ListenStream, send: Send, request_id: RequestId,
                 final: bytes, owner: ListenOwner) -> None:
        self.stream = stream  # the subscriber: its URIs, its queue
        self.send: Send = send
        self.request_id = request_id  # the listen request's id, in every update
        self.final = shared_final(final)  # the SDK's last frame: the request's result
        self.owner: ListenOwner | None = owner
        self.held: Held | None = None  # the detached connection, if detached
        self.writer: asyncio.Task[None] | None = None
        self.task: asyncio.Task[object] | None = None  # the request's, waiting for the client
        self.active = True
        self.done = False  # the final frame is sent
        self.failed = False  # the sender failed: the request's task is cancelled

    async def serve(self, headers: list[tuple[bytes, bytes]], first: list[bytes],
                    receive: Receive, pings: SseKeepAlive, detach: Detach | None = None
                    ) -> None:
        """Send the head and ``first`` (the ack); then, detached if ``detach`` can, return
        (the connection serves the stream); else send updates until the client goes or
        the subscriber is closed (then the final frame) or the server cancels the task.

        No cancel scope: the final frame completes the response, and the server then
        answers the waiting ``receive`` with ``http.disconnect`` (uvicorn sets the
        request's message event); only a failed sender cancels the task.
        """
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        pings.add(self)
        task = self.task = asyncio.current_task()
        try:
            while first:  # emptied: not kept for the stream's life
                await self.send({"type": "http.response.body", "body": first.pop(0),
                                 "more_body": True})
            self.stream.attach(self)
            held = detach(self) if detach is not None else None
            if held is not None:
                self.send = self.held = held
                self.task = None
                self.changed()  # updates queued before the stream was attached
                return
            self.changed()  # updates queued before the stream was attached
            try:
                while self.active:
                    if (await receive())["type"] == "http.disconnect":
                        break
            except asyncio.CancelledError:
                # Ours (a failed sender), and nobody else's: the stream just ends.
                if not self.failed or task is None or task.uncancel() > 0:
                    raise
        finally:
            if self.held is None:
                pings.untrack(self)
                self.active = False
                self.task = None
                writer = self.writer
                if writer is not None and writer is not asyncio.current_task():
                    writer.cancel()
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait((writer,))
                self.ended()

    def held_ended(self) -> None:
        """The detached connection is over (the client went, it was closed, or the final
        frame was sent): forget the stream."""
        self.active = False
        writer = self.writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self.ended()

    def ended(self) -> None:
        """Tell the owner the stream is over (once; later calls do nothing)."""
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.listen_ended(self)

    def cut(self) -> None:
        """End the stream now, without the final result (the server is stopping: the
        client is to listen again, elsewhere)."""
        self.active = False
        if self.held is not None:
            self.held.close()
        else:
            self._fail()

    def changed(self) -> None:
        """An update was queued, or the subscriber closed: start the sender unless one
        runs."""
        if self.active and self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    def _fail(self) -> None:
        """The sender failed: end the stream (the request's task stops waiting, or the
        detached connection is closed)."""
        self.active = False
        if self.held is not None:
            self.held.close()
            return
        task = self.task
        if task is not None and not self.failed:
            self.failed = True
            task.cancel()

    async def _write(self) -> None:
        stream, send = self.stream, self.send
        try:
            while self.active:
                queue = stream._queue
                if queue:
                    uri, committed = queue.popleft()
                    await send({"type": "http.response.body", "body": encode_update(
                        uri, self.request_id), "more_body": True})
                    metrics.notified("mcp", committed)
                    continue
                if stream.closed:
                    self.active = False
                    await send({"type": "http.response.body", "body": self.final,
                                "more_body": False})
                    self.done = True
                return  # idle: the next update starts a new sender
        except (OSError, RuntimeError) as exc:  # the client went away meanwhile
            logger.debug("listen stream update not sent: %s", exc)
            self._fail()
        except Exception:
            logger.exception("MCP listen stream sender failed")
            self._fail()
        finally:
            self.writer = None


def encode_update(uri: str, request_id: RequestId) -> bytes:
    """The frame of an update of ``uri`` on the stream of listen request ``request_id``,
    as the SDK's path sends it."""
    return encode_notification(update_notification(uri, request_id))


__all__ = ["DirectListen", "ListenOwner", "detach_of", "encode_update"]
