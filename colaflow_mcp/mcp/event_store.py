"""Each MCP session's recent SSE events; the session's GET stream is served from here."""

from __future__ import annotations

from collections import deque
from typing import Protocol

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


class GetStreamListener(Protocol):
    """The open GET stream a store serves (``get_stream.GetStream``)."""

    def changed(self) -> None:
        """A GET event was stored: send it (the stream starts a sender if none runs)."""

    def end(self) -> None:
        """The stream is over: a newer GET stream of the session took over, or the
        session ended."""


class SessionEventStore(EventStore):
    """One session's recent SSE events; the session's GET stream is served from here.

    One store per session (a shared store could not tell sessions apart: every session's
    GET stream has the same stream id). Bounded by count: the GET stream keeps
    ``capacity`` events (small notifications), request streams only the last few (they
    carry whole tool results and are rarely resumed). Event ids are ``g<seq>`` for the GET
    stream and ``r<seq>`` for request streams, so a GET-stream id that already fell off
    still resumes from what is left.

    Every GET arrives here as a resumption (the endpoint adds a Last-Event-ID where the
    client sent none) and is served by ``get_stream.GetStream``: what was stored after that
    id, then each event as it is stored, until the stream ends, a newer GET stream of the
    session takes over, or the session closes. Everything the SDK routes to the session's
    GET stream (server notifications and requests) is stored here first, so a stream
    served from the store carries all of it, with no gap between the replay and live
    events (the SDK's own path registers the live stream only after the replay returned,
    and only stores what the session sends in between).
    """

    __slots__ = ("_capacity", "_request_capacity", "_get", "_requests", "_seq", "_written",
                 "_listener", "_closed")

    def __init__(self, capacity: int, request_capacity: int = 32) -> None:
        # Memory per idle session matters (issue 14): the deques are made by the first
        # event of their kind (an idle session's GET stream may never get one).
        self._capacity = max(1, capacity)
        self._request_capacity = min(self._capacity, max(1, request_capacity))
        self._get: deque[tuple[int, types.JSONRPCMessage | None]] | None = None
        self._requests: deque[tuple[int, StreamId, types.JSONRPCMessage | None]] | None = None
        self._seq = 0
        self._written = 0  # the last GET event handed to a GET stream
        self._listener: GetStreamListener | None = None  # the GET stream being served
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The session ended: its GET stream ends too."""
        self._closed = True
        self.end_get_stream()

    def end_get_stream(self) -> None:
        """End the GET stream being served, if any (the client may open another)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.end()

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None
                          ) -> EventId:
        """Keep one event of a stream; its id says which kind of stream it was."""
        self._seq += 1
        if stream_id == GET_STREAM_KEY:
            if self._get is None:
                self._get = deque(maxlen=self._capacity)
            self._get.append((self._seq, message))
            if message is not None and self._listener is not None:
                self._listener.changed()
            return f"g{self._seq}"
        if self._requests is None:
            self._requests = deque(maxlen=self._request_capacity)
        self._requests.append((self._seq, stream_id, message))
        return f"r{self._seq}"

    # -- the GET stream ---------------------------------------------------------------

    def get_stream_start(self, last_event_id: EventId) -> int | None:
        """Where a GET stream resuming after ``last_event_id`` starts (the sequence number
        after which it sends), or None if the id is not a GET-stream id."""
        if last_event_id == GET_STREAM_RESUME:
            return self._written
        kind, digits = last_event_id[:1], last_event_id[1:]
        return int(digits) if kind == "g" and digits.isdigit() else None

    def attach_get_stream(self, listener: GetStreamListener) -> None:
        """``listener`` is now the session's GET stream; an older one ends."""
        self.end_get_stream()
        if self._closed:
            listener.end()
            return
        self._listener = listener

    def detach_get_stream(self, listener: GetStreamListener) -> None:
        """``listener`` ended (its client went away): no longer told of events."""
        if self._listener is listener:
            self._listener = None

    def get_events_after(self, after: int) -> list[tuple[int, types.JSONRPCMessage]]:
        """GET events with seq > ``after``, oldest first; walks only those (newest end)."""
        newer: list[tuple[int, types.JSONRPCMessage]] = []
        for seq, message in reversed(self._get or ()):
            if seq <= after:
                break
            if message is not None:
                newer.append((seq, message))
        newer.reverse()
        return newer

    def get_event_written(self, seq: int) -> None:
        """A GET stream sent the event ``seq``: a GET without Last-Event-ID resumes after
        it."""
        self._written = max(self._written, seq)

    # -- request streams (the SDK replays these) --------------------------------------

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback
                                  ) -> StreamId | None:
        """Replay a request stream after ``last_event_id`` (GET-stream ids are served by
        ``get_stream.GetStream``, not here)."""
        kind, digits = last_event_id[:1], last_event_id[1:]
        if kind != "r" or not digits.isdigit():
            return None
        after = int(digits)
        requests = self._requests or ()
        stream_id = next((sid for seq, sid, _ in requests if seq == after), None)
        if stream_id is None:
            return None
        for seq, sid, message in list(requests):
            if seq > after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, f"r{seq}"))
        return stream_id
