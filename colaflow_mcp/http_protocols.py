"""uvicorn's HTTP protocols with a deadline for the request head, which uvicorn lacks, and
each response's head and body in one write.

uvicorn bounds only the idle time *between* requests (``timeout_keep_alive``, armed after a
response and cancelled by the first byte of the next request). A connection that sends
nothing, or trickles a request line and headers byte by byte (slowloris), is held forever.
These subclasses close a connection whose request head (request line and headers) is not
complete ``http_header_timeout_seconds`` after the connection opened or, on a kept-alive
connection, after the first byte of the next request. Once a head is complete the deadline
is off: a long response (SSE, a held long poll) or a WebSocket upgraded from it is never
cut. Idle kept-alive connections stay under uvicorn's own keep-alive timeout.

uvicorn writes a response's status line and headers as soon as the app starts the response,
and the body in a second ``write``: two system calls, and on a busy machine two wake-ups of
the client, for every small JSON answer (profiled: these writes were a tenth of the
server's time per approval). :class:`HeadWithBody` holds the head until the body's first
write of the same pass of the event loop and sends both at once; a head whose body does not
follow in that pass (a stream, an app that awaits in between) goes out alone at the end of
the pass, so nothing waits longer than it did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from colaflow_mcp.config import Settings

logger = logging.getLogger(__name__)

_TIMEOUT_BODY = b"request head not received in time"
# Sent only to a client that began a request: one that sent nothing gets a plain close.
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
    + _TIMEOUT_BODY
)

Impl = Literal["auto", "httptools", "h11"]


class _HeadDeadline:
    """One connection's timer: armed while a request head is awaited, off once it is in."""

    __slots__ = ("seconds", "handle")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport,
            head_started: Callable[[], bool]) -> None:
        """Start the clock unless it already runs (trickled bytes never extend it)."""
        if self.handle is None:
            self.handle = loop.call_later(self.seconds, self._expired, transport, head_started)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _expired(self, transport: asyncio.Transport, head_started: Callable[[], bool]
                 ) -> None:
        self.handle = None
        if transport.is_closing():
            return
        started = head_started()
        logger.debug("closing a connection without a complete request head after %.1fs "
                     "(%s)", self.seconds, "partial head" if started else "nothing sent")
        if started:
            transport.write(REQUEST_TIMEOUT)
        transport.close()


class H11HeadTimeout(H11Protocol):
    """uvicorn's h11 protocol with the request-head deadline."""

    header_timeout_seconds = 20.0  # set per server by http_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline = _HeadDeadline(self.header_timeout_seconds)

    def _arm(self) -> None:
        self._head_deadline.arm(self.loop, self.transport, self._head_started)

    def _head_started(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a new request head
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the request failed)
            self._head_deadline.disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request's partial head, buffered during the response, is now awaited.
        if self.conn.their_state is h11.IDLE and self._head_started():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.disarm()
        super().connection_lost(exc)


class HeadWithBody:
    """The transport of one request-response cycle: its first write (the response head, or
    a ``100 Continue``) is held until the next write joins it, or until the end of this
    pass of the event loop; later writes go straight through. Everything else is the
    connection's transport's."""

    __slots__ = ("transport", "loop", "held", "joined")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.joined = False  # the held head went out (alone or with the body)

    def write(self, data: bytes) -> None:
        if self.joined:
            self.transport.write(data)
        elif self.held is None:
            self.held = data
            self.loop.call_soon(self.flush)
        else:
            held, self.held, self.joined = self.held, None, True
            self.transport.write(held + data)

    def flush(self) -> None:
        """Send a head still held (nothing followed it in its pass of the loop)."""
        held = self.held
        if held is not None:
            self.held, self.joined = None, True
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _httptools_class() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeadTimeout(HttpToolsProtocol):
        """uvicorn's httptools protocol with the request-head deadline."""

        header_timeout_seconds = 20.0  # set per server by http_protocol()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_deadline = _HeadDeadline(self.header_timeout_seconds)
            self._in_head = False

        def _arm(self) -> None:
            self._head_deadline.arm(self.loop, self.transport, lambda: self._in_head)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:  # the first byte of a request
            super().on_message_begin()
            self._in_head = True
            self._arm()

        def on_headers_complete(self) -> None:  # also called for a WebSocket upgrade
            self._in_head = False
            self._head_deadline.disarm()
            before = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle is not before:  # a request (not an upgrade)
                cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_deadline.disarm()
            super().connection_lost(exc)

    return HttpToolsHeadTimeout


def http_protocol(settings: Settings, impl: Impl = "auto") -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=…)``: the one uvicorn's ``auto`` would
    pick (httptools if installed, else h11), with ``http_header_timeout_seconds``."""
    base: type[asyncio.Protocol]
    if impl == "h11":
        base = H11HeadTimeout
    else:
        try:
            base = _httptools_class()
        except ImportError:
            if impl == "httptools":
                raise
            base = H11HeadTimeout
    return type(base.__name__, (base,),
                {"header_timeout_seconds": settings.http_header_timeout_seconds})


__all__ = ["REQUEST_TIMEOUT", "H11HeadTimeout", "HeadWithBody", "http_protocol"]
