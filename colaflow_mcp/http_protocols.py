"""uvicorn's HTTP protocols with a deadline for the request head, which uvicorn lacks.

uvicorn bounds only the idle time *between* requests (``timeout_keep_alive``, armed after a
response and cancelled by the first byte of the next request). A connection that sends
nothing, or trickles a request line and headers byte by byte (slowloris), is held forever.
These subclasses close a connection whose request head (request line and headers) is not
complete ``http_header_timeout_seconds`` after the connection opened or, on a kept-alive
connection, after the first byte of the next request. Once a head is complete the deadline
is off: a long response (SSE, a held long poll) or a WebSocket upgraded from it is never
cut. Idle kept-alive connections stay under uvicorn's own keep-alive timeout.
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
            super().on_headers_complete()

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


__all__ = ["REQUEST_TIMEOUT", "H11HeadTimeout", "http_protocol"]
