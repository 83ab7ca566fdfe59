"""A legacy session's standalone GET stream, served from its event store with no task while
idle.

The SDK serves a GET stream as an sse-starlette response: a task group with a task that
streams, one that watches for the server's exit, one that waits for the client to go, and
the replay sender, joined by a memory object stream (~30 KiB of tasks, cancel scopes and
streams per idle session, issue 14). Every event the SDK routes to the GET stream is
stored in the session's ``SessionEventStore`` first, so the stream only has to send what
the store holds: :class:`GetStream` does that the way the hub serves a WebSocket. The
request's own task waits for the client to go (``receive``); a sender task runs only
while there is something to send (the store calls :meth:`GetStream.changed` for each
event) and ends once everything stored is sent. The bytes on the wire are the SDK's: the
same headers and each event framed by the SDK and sse-starlette (``sdk_hooks``, hook 8).

The SDK still owns the session, validates the GET (Accept, session id, owner) and counts
it as a request in flight for its idle timeout; only the response is ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import anyio
import mcp_types as types
from starlette.types import Receive, Send

from colaflow_mcp.mcp.event_store import SessionEventStore

logger = logging.getLogger(__name__)

Encode = Callable[[types.JSONRPCMessage, str], bytes]


class Pings(Protocol):
    """Who pings open streams (``keepalive.SseKeepAlive``)."""

    def add(self, stream: GetStream) -> None: ...

    def untrack(self, stream: GetStream) -> None: ...


class GetStream:
    """One open GET stream of a legacy session (see the module docstring)."""

    __slots__ = ("store", "send", "encode", "after", "writer", "scope", "active")

    def __init__(self, store: SessionEventStore, after: int, send: Send,
                 encode: Encode) -> None:
        self.store = store
        self.send = send
        self.encode = encode  # an event as the SDK frames it
        self.after = after  # the last event sent (or skipped as already sent)
        self.writer: asyncio.Task[None] | None = None
        self.scope: anyio.CancelScope | None = None  # the wait for the client to go
        self.active = True

    async def serve(self, headers: list[tuple[bytes, bytes]], receive: Receive,
                    prelude: bytes = b"", pings: Pings | None = None) -> None:
        """Send the response head (and ``prelude``, the ``retry:`` hint, if any), then
        events, until the client goes, a newer GET stream of the session takes over, the
        session ends or the server shuts down; ``pings`` pings it meanwhile."""
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        disconnected = False
        try:
            if prelude:
                await self.send({"type": "http.response.body", "body": prelude,
                                 "more_body": True})
            if pings is not None:
                pings.add(self)
            with anyio.CancelScope() as self.scope:
                self.store.attach_get_stream(self)
                self.changed()  # what was stored after the client's Last-Event-ID
                while self.active:
                    if (await receive())["type"] == "http.disconnect":
                        disconnected = True
                        break
        finally:
            if pings is not None:
                pings.untrack(self)
            self.active = False
            self.scope = None
            self.store.detach_get_stream(self)
            writer = self.writer
            if writer is not None:
                writer.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait((writer,))
        if not disconnected:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    def changed(self) -> None:
        """An event was stored: start the sender unless one runs."""
        if self.active and self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    def end(self) -> None:
        """End the stream (the request's task stops waiting and completes the response)."""
        self.active = False
        if self.scope is not None:
            self.scope.cancel()

    async def _write(self) -> None:
        store, send = self.store, self.send
        try:
            while self.active:
                events = store.get_events_after(self.after)
                if not events:
                    return  # idle: the next event starts a new sender
                for seq, message in events:
                    if not self.active:
                        return
                    await send({"type": "http.response.body",
                                "body": self.encode(message, f"g{seq}"), "more_body": True})
                    store.get_event_written(seq)
                    self.after = seq
                del events
        except (OSError, RuntimeError) as exc:  # the client went away meanwhile
            logger.debug("GET stream event not sent: %s", exc)
            self.end()
        except Exception:
            logger.exception("MCP GET stream sender failed")
            self.end()
        finally:
            self.writer = None


__all__ = ["GetStream"]
