"""WebSockets transport: full duplex over one socket; a thin adapter over HubConnection.

The server admits the socket (authentication, the connection, refusals before the
upgrade); :meth:`WebSocketTransport.serve` then moves frames between the socket and the
connection, whose state it changes only through the connection's attachment methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from colaflow_mcp.http import NO_STORE
from colaflow_mcp.hub.connection import HubConnection
from colaflow_mcp.hub.registry import Connections

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL = 1002


class WebSocketTransport:
    """Serves admitted sockets."""

    def __init__(self, registry: Connections, flush_grace_seconds: float) -> None:
        self.registry = registry
        self.flush_grace_seconds = flush_grace_seconds

    async def serve(self, websocket: WebSocket, conn: HubConnection) -> None:
        """Accept the upgrade and carry the connection until either side goes."""
        generation, resuming = conn.attach_socket()
        sock = _Socket(websocket, conn, generation, self.flush_grace_seconds)
        await websocket.accept()
        if not conn.bind_socket(generation, sock.changed, sock.supersede):
            return  # superseded while accepting: the newer socket owns the connection
        if resuming:
            logger.info("hub connection %s resumed (stateful reconnect)", conn.connection_id)
            conn.resume()
        else:
            sock.changed()  # whatever was queued (or a close) while the socket was accepted
        try:
            await sock.run()
        finally:
            sock.stop()
            # Only a stateful-reconnect connection outlives its socket and may come back.
            conn.detach_socket(generation, may_resume=not self.registry.closing)


class _Socket:
    """One WebSocket of a connection, with as little per-connection state as possible.

    The endpoint's own task reads. A writer task runs only while there is something to
    send: :meth:`changed` (the connection's ``on_change``) starts it, and it ends once the
    queue is empty, so an idle connection holds no extra task and no event. Once the
    connection is closed the writer has ``flush_grace_seconds`` to send what is queued and
    the Close message (a stalled client can block a send forever): a timer armed at the
    close then cancels it and the reader, and the socket is torn down.
    """

    __slots__ = ("websocket", "conn", "generation", "flush_grace_seconds", "active", "writer",
                 "stepping", "flush_timer", "reader_timeout", "reader_cancelled")

    def __init__(self, websocket: WebSocket, conn: HubConnection, generation: int,
                 flush_grace_seconds: float) -> None:
        self.websocket = websocket
        self.conn = conn
        self.generation = generation
        self.flush_grace_seconds = flush_grace_seconds
        self.active = True  # False once superseded, stopped or closed: no more writers
        self.writer: asyncio.Task[None] | None = None
        self.stepping = False  # the writer's first step runs in ``changed`` (_write_now)
        self.flush_timer: asyncio.TimerHandle | None = None  # armed once closed
        # How the reader is stopped from outside (``cancel_reader``): an asyncio timeout
        # without a deadline, moved to now. Not an anyio CancelScope: that is ~0.6 KiB per
        # idle connection (two sets made up front), this ~0.2 KiB (issue 14).
        self.reader_timeout: asyncio.Timeout | None = None  # while the reader runs
        self.reader_cancelled = False

    def changed(self) -> None:
        """Something was queued, or the connection closed: start the writer, arm the
        flush timer."""
        if not self.active:
            return
        conn = self.conn
        if self.writer is None and not self.stepping and conn.queued and not conn.closed:
            self._write_now()
        elif self.writer is None and not self.stepping and (conn.queued or conn.closed):
            self.writer = asyncio.get_running_loop().create_task(self._write())
        if conn.closed and self.flush_timer is None:
            self.flush_timer = asyncio.get_running_loop().call_later(
                self.flush_grace_seconds, self.supersede)

    def _write_now(self) -> None:
        """Run the writer's first step here, before the caller goes on: a frame queued
        while the socket is writable is on the wire when ``changed`` returns (a decision's
        event before its HTTP response). Only a send that has to wait (flow control, a
        full buffer) leaves the rest to a task; in the common case no task is made.

        (A task would write one loop iteration later, behind whatever the loop runs in
        between — at 10,000 connections that was the tail of delivery: RESULTS, "The tail
        at 10,000 connections".)
        """
        coro = self._write()
        self.stepping = True  # a change while stepping is taken by this writer's loop
        try:
            yielded = coro.send(None)
        except StopIteration:
            return  # everything written; the writer is done (and ``writer`` None)
        finally:
            self.stepping = False
        if not self.active:  # stopped while stepping (superseded): no task to carry on
            coro.close()
            return
        self.writer = asyncio.get_running_loop().create_task(_carry_on(coro, yielded))

    def supersede(self) -> None:
        """End this socket now: a stateful client is back on a new one, or a closed
        connection's flush grace ran out."""
        self.stop()
        self.cancel_reader()

    def cancel_reader(self) -> None:
        """Stop the reader (now, or as soon as it starts)."""
        self.reader_cancelled = True
        timeout = self.reader_timeout
        if timeout is not None and timeout.when() is None:
            timeout.reschedule(-1.0)  # in the past: the reader's task is cancelled at once

    def stop(self) -> None:
        """No more writing: cancel the writer and the flush timer."""
        self.active = False
        if self.flush_timer is not None:
            self.flush_timer.cancel()
        if self.writer is not None:
            self.writer.cancel()

    async def run(self) -> None:
        """Read until the peer goes, the connection closes or the socket is superseded."""
        if self.reader_cancelled:
            return
        timeout = asyncio.timeout(None)
        try:
            async with timeout:
                self.reader_timeout = timeout
                await self._read()
        except TimeoutError:
            if not timeout.expired():
                raise  # not ours: from the code the reader ran
        finally:
            self.reader_timeout = None

    async def _read(self) -> None:
        conn, websocket = self.conn, self.websocket
        try:
            while not conn.closed:
                message = await websocket.receive()
                if not await self._received(message):
                    break
                del message  # an idle connection keeps no copy of its last message
        except WebSocketDisconnect:
            pass
        if conn.ws_generation != self.generation or (conn.stateful and not conn.closed):
            return  # keep the connection: the client may come back
        conn.close()
        # Let the writer flush the Close message (the flush timer bounds it).
        writer = self.writer
        if writer is not None:
            await asyncio.wait((writer,))

    async def _received(self, message: Message) -> bool:
        """Hand one WebSocket message to the connection; False when reading must stop."""
        conn = self.conn
        if message["type"] == "websocket.disconnect":
            return False
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            if len(raw) > conn.limits.max_message_bytes * 4:
                conn.close_too_large("message too large")
                return False
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                conn.close("Connection closed with an error: invalid UTF-8")
                return False
        await conn.receive(text)
        return True

    async def _write(self) -> None:
        conn, websocket = self.conn, self.websocket
        try:
            while conn.ws_generation == self.generation:
                frames = conn.take()
                if frames:
                    taken_after_drop = conn.slow  # then this batch is just the Close
                    for text in frames:
                        if conn.slow and not taken_after_drop:
                            break  # closed for not reading: its Close goes next
                        await websocket.send_text(text)
                    del frames, text
                    conn.written()
                    continue
                if not conn.closed:
                    return  # idle: the next change starts a new writer
                if websocket.application_state is WebSocketState.CONNECTED:
                    code = CLOSE_TOO_BIG if conn.too_large else CLOSE_NORMAL
                    await websocket.close(code)
                break
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the peer is gone
        except Exception:
            logger.exception("hub connection %s: WebSocket writer failed", conn.connection_id)
        finally:
            self.writer = None
        # Closed and flushed, superseded, or the peer is gone: this socket is done.
        self.stop()
        self.cancel_reader()


class _Yield:
    """Awaitable that hands one object up to the running task and returns what it sends
    back (the task waits on the future as if the coroutine under it had yielded it)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.obj)


async def _carry_on(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Run a coroutine that was stepped by hand (``_Socket._write_now``) to its end in the
    current task: what it yields goes to the task, what the task sends or throws (a
    future's result, a cancellation) goes back into it."""
    while True:
        try:
            sent = await _Yield(yielded)
        except BaseException as exc:  # noqa: BLE001 - cancellation included: handed on
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


async def deny(websocket: WebSocket, status: int, detail: str) -> None:
    """Answer the upgrade request with a plain HTTP status (before any connection)."""
    await websocket.send_denial_response(
        PlainTextResponse(detail, status_code=status, headers=NO_STORE)
    )
