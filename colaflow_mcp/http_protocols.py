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

A held response can let go of its request (the ``DETACH`` scope extension, ``colaflow_mcp.http``):
once an SSE stream's head and first frames are sent, :class:`HeldConnection` replaces the
protocol for that socket. uvicorn's protocol, its parser and the request cycle (with the
request's task, scope and the app's frames) are what an idle held stream cost (~10 KiB,
issue 14); a ``HeldConnection`` is the transport, the stream's owner and a few flags. It
writes the body's chunks, stays in uvicorn's connection accounting (the concurrency limit,
graceful shutdown), and when the response ends on a keep-alive connection hands the socket
back to a fresh protocol of the server's class, with any bytes the client sent meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, Protocol

import h11
from uvicorn.protocols.http.flow_control import CLOSE_HEADER, HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol

from colaflow_mcp.config import Settings
from colaflow_mcp.http import DETACH

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


class HeldOwner(Protocol):
    """Who serves a detached response: told once that it is over (the client went, the
    connection was closed, or the response's last chunk was sent)."""

    def held_ended(self) -> None: ...


class HeldConnection(asyncio.Protocol):
    """The protocol of a connection whose response was detached from its request (see the
    module docstring). Called with ASGI ``http.response.body`` messages, it sends them as
    uvicorn would have (chunked); the last one ends the response."""

    __slots__ = ("transport", "server_state", "cls", "config", "app_state", "owner",
                 "keep_alive", "pending", "writable", "closer", "lost", "done",
                 "reading_paused")

    def __init__(self, transport: asyncio.Transport, server_state: Any,
                 cls: type[Any], config: Any, app_state: dict[str, Any], owner: HeldOwner,
                 keep_alive: bool, pending: bytes = b"") -> None:
        self.transport = transport
        self.server_state = server_state  # uvicorn's: connections, tasks, requests served
        self.cls, self.config, self.app_state = cls, config, app_state  # for the hand-back
        self.owner: HeldOwner | None = owner
        self.keep_alive = keep_alive
        self.pending = pending  # what the client sent after the request (pipelined)
        self.writable: asyncio.Event | None = None  # exists only while writing is paused
        self.closer: asyncio.Future[None] | None = None  # exists once shutdown began
        self.lost = False
        self.done = False  # the response's last chunk is sent
        self.reading_paused = False

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        """Send a body message, as uvicorn's request cycle does (nothing once the client
        is gone; an error after the response ended)."""
        writable = self.writable
        if writable is not None and not self.lost:
            await writable.wait()
        if self.lost:
            return
        if self.done:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after "
                               "response already completed.")
        if message["type"] != "http.response.body":
            raise RuntimeError("Expected ASGI message 'http.response.body', but got "
                               f"'{message['type']}'.")
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        frame = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
        if not more:
            frame += b"0\r\n\r\n"
        if frame:
            self.transport.write(frame)
        if not more:
            self._complete()

    def close(self) -> None:
        """End the response without its last chunk (the client sees it cut)."""
        if not self.lost and not self.done:
            self.transport.close()

    def _complete(self) -> None:
        self.done = True
        if self.keep_alive and not self.transport.is_closing():
            self._hand_back()
        else:
            self.server_state.total_requests += 1
            self.transport.close()
        self._tell_owner()

    def _hand_back(self) -> None:
        """The response ended on a keep-alive connection: a fresh protocol of the server's
        class takes the socket, as after any response, and reads what came meanwhile."""
        transport, state = self.transport, self.server_state
        protocol = self.cls(config=self.config, server_state=state, app_state=self.app_state)
        state.connections.discard(self)
        state.total_requests += 1
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        pending, self.pending = self.pending, b""
        protocol.taken_back(pending)
        if self.closer is not None and not self.closer.done():
            self.closer.set_result(None)

    def _tell_owner(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.held_ended()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) > HIGH_WATER_LIMIT and not self.reading_paused:
            self.reading_paused = True  # as uvicorn does with a pipelined request
            self.transport.pause_reading()

    def eof_received(self) -> None:
        return None  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server_state.connections.discard(self)
        self.resume_writing()
        if exc is None:
            self.transport.close()
        if self.closer is not None and not self.closer.done():
            self.closer.set_result(None)
        self._tell_owner()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None:
            writable.set()

    # -- uvicorn's server -------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: the response may finish (then the connection
        closes); when the server's grace period is over, the task started here is
        cancelled with the others, and the connection is closed, as a held request's is."""
        self.keep_alive = False
        if self.lost or self.done or self.closer is not None:
            return
        loop = asyncio.get_running_loop()
        self.closer = loop.create_future()
        task = loop.create_task(self._close_when_cancelled(self.closer))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _close_when_cancelled(self, closer: asyncio.Future[None]) -> None:
        try:
            await closer
        except asyncio.CancelledError:
            self.transport.close()
            raise


def _hold(protocol: Any, owner: HeldOwner, keep_alive: bool, pending: bytes = b""
          ) -> HeldConnection:
    """Give ``protocol``'s connection to a :class:`HeldConnection`."""
    transport = protocol.transport
    held = HeldConnection(transport, protocol.server_state, type(protocol), protocol.config,
                          protocol.app_state, owner, keep_alive, pending)
    protocol.connections.discard(protocol)
    protocol.connections.add(held)
    protocol._head_deadline.disarm()
    protocol._unset_keepalive_if_required()
    protocol._extensions.clear()
    if protocol.flow.read_paused:  # reading on: a client that goes is noticed
        protocol.flow.resume_reading()
    transport.set_protocol(held)
    return held


class H11HeadTimeout(H11Protocol):
    """uvicorn's h11 protocol with the request-head deadline."""

    header_timeout_seconds = 20.0  # set per server by http_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline = _HeadDeadline(self.header_timeout_seconds)
        self._extensions: dict[str, Any] = {DETACH: self.detach}  # cleared when let go

    def _arm(self) -> None:
        self._head_deadline.arm(self.loop, self.transport, self._head_started)

    def _head_started(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _offer_detach(self) -> None:
        # A request's scope is made and its task created in the same call; the task runs
        # later, so the scope it gets already has the extension.
        scope = self.scope
        if scope is not None and "extensions" not in scope:
            scope["extensions"] = self._extensions

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a new request head
            self._arm()
        super().data_received(data)
        self._offer_detach()
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the request failed)
            self._head_deadline.disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._offer_detach()
        # A pipelined request's partial head, buffered during the response, is now awaited.
        if self.conn.their_state is h11.IDLE and self._head_started():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.disarm()
        self._extensions.clear()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._extensions.clear()
        super().handle_websocket_upgrade(event)

    def taken_back(self, pending: bytes) -> None:
        """The connection is this protocol's again after a detached response ended:
        read what the client sent meanwhile, else wait as after any response."""
        self._head_deadline.disarm()
        if pending:
            self.data_received(pending)
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def detach(self, owner: HeldOwner) -> HeldConnection | None:
        """The ``DETACH`` extension: hand this connection's chunked response in progress
        to a :class:`HeldConnection` (None when it cannot be: a request body not all
        read, a response not chunked, writing paused, the client half-closed)."""
        cycle, conn = self.cycle, self.conn
        if (cycle is None or not cycle.response_started or cycle.response_complete
                or cycle.disconnected or self.flow.write_paused
                or self.transport.is_closing() or cycle.scope["method"] == "HEAD"
                or conn.their_state not in (h11.DONE, h11.MUST_CLOSE)
                or conn.our_state is not h11.SEND_BODY
                or type(getattr(conn, "_writer", None)).__name__ != "ChunkedWriter"):
            return None
        pending, closed = conn.trailing_data
        if closed:
            return None
        # h11's own keep-alive verdict (Connection: close either way, HTTP/1.0).
        keep_alive = (cycle.keep_alive and CLOSE_HEADER not in cycle.scope["headers"]
                      and bool(getattr(getattr(conn, "_cstate", None), "keep_alive", False)))
        held = _hold(self, owner, keep_alive, bytes(pending))
        cycle.disconnected = True  # the app's send is a no-op; its return is no error
        cycle.message_event.set()
        self.cycle = None  # type: ignore[assignment]
        return held


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
            self._extensions: dict[str, Any] = {DETACH: self.detach}  # cleared when let go

        def _arm(self) -> None:
            self._head_deadline.arm(self.loop, self.transport, lambda: self._in_head)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:  # the first byte of a request
            super().on_message_begin()
            self.scope["extensions"] = self._extensions
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
            self._extensions.clear()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            self._extensions.clear()
            super().handle_websocket_upgrade()

        def taken_back(self, pending: bytes) -> None:
            """The connection is this protocol's again after a detached response ended:
            read what the client sent meanwhile, else wait as after any response."""
            self._head_deadline.disarm()
            if pending:
                self.data_received(pending)
            else:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def detach(self, owner: HeldOwner) -> HeldConnection | None:
            """The ``DETACH`` extension (see the h11 protocol's): not while a pipelined
            request, or part of one, was already read."""
            cycle = self.cycle
            if (cycle is None or self.pipeline or self._in_head or cycle.more_body
                    or not cycle.response_started or cycle.response_complete
                    or cycle.disconnected or not cycle.chunked_encoding
                    or cycle.scope["method"] == "HEAD" or self.flow.write_paused
                    or self.transport.is_closing()):
                return None
            if isinstance(cycle.transport, HeadWithBody):
                cycle.transport.flush()  # the head, if still held, goes first
            held = _hold(self, owner, cycle.keep_alive)
            cycle.disconnected = True  # the app's send is a no-op; its return is no error
            cycle.message_event.set()
            self.cycle = None  # type: ignore[assignment]
            self.parser = None  # type: ignore[assignment]  # as connection_lost does
            return held

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


__all__ = ["REQUEST_TIMEOUT", "H11HeadTimeout", "HeadWithBody", "HeldConnection", "HeldOwner",
           "http_protocol"]
