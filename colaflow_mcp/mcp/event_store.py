"""Each MCP session's recent SSE events; the session's GET stream is served from here."""

from __future__ import annotations

from collections import deque

import anyio
import mcp_types as types
from mcp.server.streamable_http import (
    GET_STREAM_KEY,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)

# Sent as Last-Event-ID on a GET that brings none (see ``sdk_hooks.serve_get_from_store``):
# resume after the last GET event this session wrote to any earlier GET stream (all of
# them, on its first).
GET_STREAM_RESUME = "g-resume"


class SessionEventStore(EventStore):
    """One session's recent SSE events; the session's GET stream is served from here.

    One store per session (a shared store could not tell sessions apart: every session's
    GET stream has the same stream id). Bounded by count: the GET stream keeps
    ``capacity`` events (small notifications), request streams only the last few (they
    carry whole tool results and are rarely resumed). Event ids are ``g<seq>`` for the GET
    stream and ``r<seq>`` for request streams, so a GET-stream id that already fell off
    still resumes from what is left.

    Every GET arrives here as a replay (the endpoint adds a Last-Event-ID where the client
    sent none), and the replay does not return: it sends what was stored after that id,
    then tails the store until the stream ends, a newer GET stream of the session takes
    over, or the session closes. The SDK's own path registers the live stream only after
    the replay has returned, and drops (only stores) what the session sends in between; a
    decision announced in that gap would reach the client on its next reconnect at best.
    Served from the store, the stream has no gap: whatever is stored is sent, in order.
    """

    __slots__ = ("_capacity", "_request_capacity", "_get", "_requests", "_seq", "_written",
                 "_stream", "_closed", "_wake")

    def __init__(self, capacity: int, request_capacity: int = 32) -> None:
        # Memory per idle session matters (issue 14): the deques are made by the first
        # event of their kind (an idle session's GET stream may never get one), the wake-up
        # event only while a GET stream waits.
        self._capacity = max(1, capacity)
        self._request_capacity = min(self._capacity, max(1, request_capacity))
        self._get: deque[tuple[int, types.JSONRPCMessage | None]] | None = None
        self._requests: deque[tuple[int, StreamId, types.JSONRPCMessage | None]] | None = None
        self._seq = 0
        self._written = 0  # the last GET event handed to a GET stream
        self._stream = 0  # generation of the GET stream being served
        self._closed = False
        self._wake: anyio.Event | None = None

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    def close(self) -> None:
        """The session ended: its GET stream ends too."""
        self._closed = True
        self._notify()

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None
                          ) -> EventId:
        """Keep one event of a stream; its id says which kind of stream it was."""
        self._seq += 1
        if stream_id == GET_STREAM_KEY:
            if self._get is None:
                self._get = deque(maxlen=self._capacity)
            self._get.append((self._seq, message))
            if message is not None:
                self._notify()
            return f"g{self._seq}"
        if self._requests is None:
            self._requests = deque(maxlen=self._request_capacity)
        self._requests.append((self._seq, stream_id, message))
        return f"r{self._seq}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback
                                  ) -> StreamId | None:
        """Replay after ``last_event_id``; for the GET stream, then keep tailing."""
        if last_event_id == GET_STREAM_RESUME:
            await self._serve_get_stream(self._written, send_callback)
            return None
        kind, digits = last_event_id[:1], last_event_id[1:]
        if kind not in ("g", "r") or not digits.isdigit():
            return None
        after = int(digits)
        if kind == "g":
            await self._serve_get_stream(after, send_callback)
            return None
        requests = self._requests or ()
        stream_id = next((sid for seq, sid, _ in requests if seq == after), None)
        if stream_id is None:
            return None
        for seq, sid, message in list(requests):
            if seq > after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, f"r{seq}"))
        return stream_id

    def _get_events_after(self, after: int) -> list[tuple[int, types.JSONRPCMessage | None]]:
        """GET events with seq > ``after``, oldest first; walks only those (newest end)."""
        newer: list[tuple[int, types.JSONRPCMessage | None]] = []
        for event in reversed(self._get or ()):
            if event[0] <= after:
                break
            newer.append(event)
        newer.reverse()
        return newer

    async def _serve_get_stream(self, after: int, send: EventCallback) -> None:
        """Send GET events after ``after``, then each one as it is stored, until replaced."""
        self._stream += 1
        me = self._stream
        self._notify()  # an older GET stream of this session ends
        while not self._closed and self._stream == me:
            if self._wake is None:
                self._wake = anyio.Event()
            wake = self._wake
            for seq, message in self._get_events_after(after):
                if self._closed or self._stream != me:
                    return
                if message is not None:
                    await send(EventMessage(message, f"g{seq}"))
                    self._written = max(self._written, seq)
                after = seq
            await wake.wait()
