"""One hub connection: an explicit state machine that the transports drive.

A transport feeds received text to :meth:`HubConnection.receive` and drains outbound frames
with :meth:`HubConnection.wait_outbound` / :meth:`HubConnection.take`, then reports
:meth:`HubConnection.written`.

What a connection holds for its client is bounded in bytes and messages (the overflow
policy): frames queued or taken by the transport and not yet written, plus, with stateful
reconnect, frames kept until acknowledged. A client that stops reading is closed once the
bound is reached, and what was queued for it is dropped. A client that reads is not closed
for the answers to its own requests: while the transport's backlog is over a high-water
mark (a quarter of the bytes, half of the messages), its further input waits until the
transport drains it (flow control); only if it does not drain within ``drain_timeout`` is
the client taken to be not reading.

The connection owns its transport attachment too: a transport reads the state to decide
what to answer, and changes it only through the methods of the "transport attachment"
section (``attach_socket`` / ``bind_socket`` / ``detach_socket`` for WebSockets,
``attach_event_stream`` / ``detach_event_stream`` for SSE, ``start_long_polling`` /
``begin_poll`` / ``end_poll`` for long polling, ``begin_send`` / ``end_send`` for the POSTs
of the last two). The WebSocket transport binds an ``on_change`` callback, called
synchronously on every change, and starts its writer from it, so an idle socket holds no
waiting task.

Thousands of idle connections are the normal case, so a connection keeps little: slots
instead of an instance dict, and its events exist only while someone waits on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from colaflow_mcp import metrics
from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub.outbound import Limits, Outbound

if TYPE_CHECKING:
    from colaflow_mcp.domain.auth import Principal

logger = logging.getLogger(__name__)


class ConnectionState(Enum):
    NEGOTIATED = "negotiated"  # negotiate answered; no transport request yet
    HANDSHAKING = "handshaking"  # a transport is attached; waiting for the handshake
    CONNECTED = "connected"  # handshake accepted; hub messages flow
    CLOSED = "closed"


class Transport(Enum):
    WEBSOCKETS = "WebSockets"
    SSE = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


class HubError(Exception):
    """An invocation failed; the message is sent to the caller as the completion error."""


class Hub(Protocol):
    """The methods a client may invoke."""

    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        """Run ``target``; return its result or raise HubError."""

    def closed(self, conn: HubConnection) -> None:
        """The connection closed: drop what it held."""


# An idle connection that watches nothing shares this (an empty set is ~0.2 KiB).
NO_SUBSCRIPTIONS: frozenset[str] = frozenset()

# One dispatch hands the same event to every subscriber (a creation to every reviewer of
# the tenant): frame it once, not once per connection.
_last_framed: tuple[DecisionEvent | None, str] = (None, "")


def _framed(event: DecisionEvent) -> str:
    global _last_framed
    last, text = _last_framed
    if last is not event:
        text = p.invocation(event.target, [event.payload])
        _last_framed = (event, text)
    return text


class HubConnection:
    """State, buffers and timers of one logical SignalR connection."""

    __slots__ = (
        "connection_id", "token", "principal", "hub", "limits", "_on_closed", "state",
        "transport", "subscriptions", "review_queue", "handshake_version", "close_error",
        "too_large",
        "created_at", "last_received", "last_sent", "closed_at", "stream_attached",
        "poll_generation", "poll_active", "detached_since", "posting", "ws_generation",
        "_supersede", "on_change", "_reader", "_out", "_changed", "_deferred",
        "stateful_allowed", "stateful", "_in_next", "_in_latest", "_in_acked",
        "_closed_event", "_drained_event", "_drained", "_room", "slow",
    )

    def __init__(
        self,
        *,
        connection_id: str,
        token: str,
        principal: Principal,
        hub: Hub,
        limits: Limits,
        on_closed: Callable[[HubConnection], None] | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.token = token  # secret: never logged
        self.principal = principal
        self.hub = hub
        self.limits = limits
        self._on_closed = on_closed
        self.state = ConnectionState.NEGOTIATED
        self.transport: Transport | None = None
        # The changes it watches: a set made by the first subscription (methods.py).
        self.subscriptions: AbstractSet[str] = NO_SUBSCRIPTIONS
        self.review_queue = False  # subscribed to its tenant's review queue (reviewers)
        self.handshake_version: int | None = None
        self.close_error: str | None = None
        self.too_large = False  # closed for an oversize message (WebSocket code 1009, 413)
        self.slow = False  # closed for not reading: what was queued is dropped
        now = time.monotonic()
        self.created_at = now
        self.last_received = now
        self.last_sent = now
        self.closed_at: float | None = None
        # Transport bookkeeping: a WebSocket or SSE stream attached now, or a poll in
        # flight; ``detached_since`` starts the disconnect timeout for half-transports.
        self.stream_attached = False
        self.poll_generation = 0
        self.poll_active = False
        self.detached_since: float | None = now
        self.posting = False
        # WebSockets: which socket owns the connection, and how to end it early when a
        # stateful-reconnect client comes back before the old socket was seen to die.
        self.ws_generation = 0
        self._supersede: Callable[[], None] | None = None
        # Called on every change (queued, closed, resumed, woken): see the module doc.
        self.on_change: Callable[[], None] | None = None
        self._reader = p.FrameReader(limits.max_message_bytes)
        self._out = Outbound(limits)  # queued, in flight, kept for replay: bounded
        self._changed: anyio.Event | None = None  # only while someone waits
        self._room: anyio.Event | None = None  # only while input waits for the transport
        self._deferred: list[str] | None = None
        # Stateful reconnect (negotiated, then handshake version 2; WebSockets only): every
        # trackable message carries an implicit sequence id and is kept until acked.
        self.stateful_allowed = False
        self.stateful = False
        self._in_next = 1
        self._in_latest = 0
        self._in_acked = 0
        # Created on first use (see closed_event and drained).
        self._closed_event: anyio.Event | None = None
        self._drained_event: anyio.Event | None = None
        self._drained = False  # closed, and the transport took everything

    def __repr__(self) -> str:  # no token: it is a credential
        return f"<HubConnection {self.connection_id} {self.state.value}>"

    # -- Subscriber protocol (notify.Notifier) ----------------------------------------

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    def deliver(self, event: DecisionEvent) -> None:
        """Queue a decision (or, on the review queue, creation) event as a non-blocking
        invocation of its target."""
        # The commit time (colaflow_notify_seconds) goes with the frame: it may be written now.
        self.send(_framed(event), None if event.created else event.committed_at)

    def owned_by(self, principal: Principal) -> bool:
        """Whether a request by ``principal`` may use this connection (same key/user)."""
        owner = self.principal
        return (owner.tenant_id, owner.api_key_id, owner.user) == (
            principal.tenant_id, principal.api_key_id, principal.user)

    # -- outbound ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def closed_event(self) -> anyio.Event:
        """Set once the connection is closed."""
        event = self._closed_event
        if event is None:
            event = self._closed_event = anyio.Event()
            if self.closed:
                event.set()
        return event

    @property
    def drained(self) -> anyio.Event:
        """Set once closed and the transport took everything queued."""
        event = self._drained_event
        if event is None:
            event = self._drained_event = anyio.Event()
            if self._drained:
                event.set()
        return event

    @property
    def queued(self) -> int:
        return len(self._out.frames)

    @property
    def queued_bytes(self) -> int:
        """Bytes held for the client: queued, in flight to the transport, kept for replay."""
        return self._out.held

    def send(self, text: str, committed_at: float | None = None) -> None:
        """Queue one framed hub message (an invocation or completion; ``committed_at``: a
        decision's commit time); closes the connection past its limits."""
        if self.closed:
            return
        if self._deferred is not None:
            self._deferred.append(text)
            if committed_at is not None:
                self._out.note_commit(committed_at)
            return
        self._enqueue(text, trackable=True, committed_at=committed_at)

    def _enqueue(self, text: str, trackable: bool = False,
                 committed_at: float | None = None) -> None:
        size = p.wire_size(text)
        tracked = self.stateful and trackable
        refusal = self._out.refusal(size, tracked)
        if refusal is not None:
            self._overflow(refusal)
            return
        self._out.push(text, size, tracked)
        if committed_at is not None:
            self._out.note_commit(committed_at)
        self.last_sent = time.monotonic()
        self._notify()

    def _overflow(self, detail: str) -> None:
        """Close a client that is not reading (or, stateful, not acknowledging)."""
        # A small transport backlog means the client reads but does not acknowledge.
        what = "read" if self._out.backlog_high() or not self.stateful else "acknowledge"
        logger.warning("hub connection %s: the client did not %s its messages (%s, %d bytes "
                       "held); closing it", self.connection_id, what, detail, self.queued_bytes)
        self.close(f"Connection closed: the client did not {what} its messages in time "
                   f"({detail}).", allow_reconnect=True, discard=True)

    def take(self) -> list[str]:
        """All queued frames, in order (the transport sends them next, then calls
        :meth:`written`)."""
        frames = self._out.take()
        if self.closed and not self._drained:
            self._drained = True
            if self._drained_event is not None:
                self._drained_event.set()
        return frames

    def written(self) -> None:
        """The transport wrote everything it took: input held back for it may go on."""
        for committed in self._out.written():
            metrics.notified("hub", committed)
        room = self._room
        if room is not None and not self._out.backlog_high():
            room.set()

    async def wait_outbound(self) -> None:
        """Return once something is queued, the connection closed, or the state changed."""
        if self._out.frames or self.closed:
            return
        changed = self._changed
        if changed is None:
            changed = self._changed = anyio.Event()
        await changed.wait()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None  # the next waiter makes a new one
            changed.set()
        if self.on_change is not None:
            self.on_change()

    def resume(self) -> None:
        """A WebSocket came back for a stateful connection: Sequence, then replay."""
        self._out.rewind()
        self._reader = p.FrameReader(self.limits.max_message_bytes)
        self.last_received = self.last_sent = time.monotonic()
        self._notify()

    # -- lifecycle --------------------------------------------------------------------

    def attach(self, transport: Transport) -> None:
        """A transport request arrived for this connection."""
        if self.transport is None:
            self.transport = transport
        if self.state is ConnectionState.NEGOTIATED:
            self.state = ConnectionState.HANDSHAKING
            self.created_at = time.monotonic()  # the handshake timeout starts now

    def close(
        self, error: str | None = None, *, allow_reconnect: bool = False,
        send_close: bool = True, discard: bool = False,
    ) -> None:
        """Close once: queue a Close message (after a handshake), wake the transport.

        ``discard`` (a client that is not reading): drop what is queued, so the Close is
        the next thing the client gets and the memory is freed now.
        """
        if self.closed:
            return
        if discard:
            self.slow = True
            self._out.discard()
        self._out.end_replay()  # a closed connection is never resumed
        if send_close and self.state is ConnectionState.CONNECTED:
            self._deferred = None
            self._out.control(p.close_message(error, allow_reconnect))
        self.state = ConnectionState.CLOSED
        self.close_error = error
        self.closed_at = time.monotonic()
        try:
            self.hub.closed(self)
        except Exception:
            logger.exception("hub cleanup of %s failed", self.connection_id)
        self._notify()
        if self._room is not None:
            self._room.set()
        if self._closed_event is not None:
            self._closed_event.set()
        if self._on_closed is not None:
            self._on_closed(self)

    # -- transport attachment -----------------------------------------------------------

    def attach_socket(self) -> tuple[int, bool]:
        """A WebSocket takes the connection: its generation, and whether it resumes a
        stateful connection (whose socket dropped, or looks alive but a half-open TCP
        connection: the new socket wins and the old one is ended)."""
        if self.stream_attached and self._supersede is not None:
            self._supersede()
        resuming = self.transport is Transport.WEBSOCKETS and self.stateful
        self.attach(Transport.WEBSOCKETS)
        self.ws_generation += 1
        self.stream_attached = True
        self.detached_since = None
        return self.ws_generation, resuming

    def bind_socket(self, generation: int, on_change: Callable[[], None],
                    supersede: Callable[[], None]) -> bool:
        """The accepted socket of ``generation`` starts serving; False if a newer socket
        took the connection meanwhile."""
        if generation != self.ws_generation:
            return False
        self.on_change = on_change
        self._supersede = supersede
        return True

    def detach_socket(self, generation: int, *, may_resume: bool) -> None:
        """The socket of ``generation`` is gone. A stateful connection waits (up to the
        disconnect timeout) for its client to come back, if ``may_resume``; any other
        closes. A superseded socket leaves the connection to the newer one."""
        if generation != self.ws_generation:
            return
        self.stream_attached = False
        self._supersede = None
        self.on_change = None
        if self.stateful and not self.closed and may_resume:
            self.detached_since = time.monotonic()  # the disconnect timeout starts
        else:
            self.close()

    def attach_event_stream(self) -> None:
        """An SSE stream now carries the connection's messages."""
        self.attach(Transport.SSE)
        self.stream_attached = True
        self.detached_since = None

    def detach_event_stream(self) -> None:
        """The SSE stream ended: so does the connection."""
        self.stream_attached = False
        self.close()

    def start_long_polling(self) -> None:
        """The first poll: long polling is the transport; the disconnect timeout runs
        until the next poll arrives."""
        self.attach(Transport.LONG_POLLING)
        self.detached_since = time.monotonic()

    def begin_poll(self) -> int:
        """A poll arrived: it supersedes any poll still held (that one answers 204)."""
        self.poll_generation += 1
        self._notify()
        self.poll_active = True
        self.detached_since = None
        self.last_received = time.monotonic()
        return self.poll_generation

    def poll_superseded(self, generation: int) -> bool:
        """Whether a newer poll took over from the poll of ``generation``."""
        return generation != self.poll_generation

    def end_poll(self, generation: int) -> None:
        """The poll of ``generation`` answered; the disconnect timeout runs again."""
        if generation == self.poll_generation:
            self.poll_active = False
            self.detached_since = time.monotonic()

    def begin_send(self) -> bool:
        """A send (POST) starts; False while another one is in progress."""
        if self.posting:
            return False
        self.posting = True
        return True

    def end_send(self) -> None:
        """The send finished."""
        self.posting = False

    def close_too_large(self, reason: str) -> None:
        """Close for an oversize message (WebSocket code 1009, HTTP 413)."""
        self.too_large = True
        self.close(f"Connection closed with an error: {reason}")

    # -- inbound ----------------------------------------------------------------------

    async def receive(self, text: str) -> None:
        """Process received text: any number of whole or partial messages."""
        if self.closed:
            return
        self.last_received = time.monotonic()
        try:
            messages = self._reader.feed(text)
        except p.MessageTooLarge as exc:
            self.too_large = True
            self._protocol_error(str(exc))
            return
        except p.ProtocolError as exc:
            self._protocol_error(str(exc))
            return
        for raw in messages:
            if self.closed:
                return
            if self.state is not ConnectionState.CONNECTED:
                self._handshake(raw)
                continue
            if self._out.backlog_high():
                await self._wait_for_room()
                if self.closed:
                    return
            try:
                message = p.parse_message(raw)
            except p.ProtocolError as exc:
                self._protocol_error(str(exc))
                return
            await self._dispatch(message)

    async def _wait_for_room(self) -> None:
        """Flow control: hold this client's input until the transport has drained what is
        queued for it; a client that does not drain it in time is not reading."""
        room = self._room = anyio.Event()
        try:
            with anyio.move_on_after(self.limits.drain_timeout):
                await room.wait()
        finally:
            self._room = None
        if not self.closed and self._out.backlog_high():
            self._overflow(f"the backlog did not drain within {self.limits.drain_timeout:g} s")

    def _protocol_error(self, reason: str) -> None:
        logger.info("hub connection %s: protocol error: %s", self.connection_id, reason)
        if self.state is not ConnectionState.CONNECTED:
            self._out.control(p.handshake_response(reason))
        self.close(f"Connection closed with an error: {reason}")

    def _handshake(self, raw: str) -> None:
        try:
            request = p.parse_handshake(raw)
        except p.ProtocolError as exc:
            self._protocol_error(f"invalid handshake: {exc}")
            return
        error = p.handshake_error(request)
        if error is not None:
            self._out.control(p.handshake_response(error))
            self.close(error)
            return
        self.handshake_version = request.version
        self.stateful = (self.stateful_allowed and request.version >= 2
                         and self.transport is Transport.WEBSOCKETS)
        if self.stateful:
            self._out.start_replay()
        self.state = ConnectionState.CONNECTED
        self._enqueue(p.handshake_response())

    async def _dispatch(self, message: p.Message) -> None:
        if self.stateful:
            if isinstance(message, p.Ack):
                self._out.ack(message.sequence_id)
                return
            if isinstance(message, p.Sequence):
                if message.sequence_id > self._in_next:
                    self._protocol_error("Sequence ID greater than the messages received")
                    return
                self._in_next = message.sequence_id
                return
            if isinstance(message, p.Invocation | p.Completion | p.Unsupported):
                current, self._in_next = self._in_next, self._in_next + 1
                if current <= self._in_latest:
                    return  # replayed after a reconnect: already processed
                self._in_latest = current
        if isinstance(message, p.Invocation):
            await self._invoke(message)
        elif isinstance(message, p.Close):
            self.close()
        elif isinstance(message, p.Unsupported):
            # CancelInvocation: our invocations complete before the next message is read,
            # so there is never one in flight to cancel (the spec says: ignore).
            if message.type != p.MessageType.CANCEL_INVOCATION and message.invocation_id:
                self.send(p.completion_error(
                    message.invocation_id, "Streaming is not supported by this hub."))
        # Ping, Completion (we never invoke the client with an id), Ack, Sequence: the
        # activity time is all they change.

    async def _invoke(self, message: p.Invocation) -> None:
        result: Any = None
        error: str | None = None
        if message.stream_ids:
            error = "Client-to-server streaming is not supported by this hub."
        else:
            # Events produced while the method runs (an already-decided change) follow
            # its completion, so a caller sees the snapshot before the event.
            self._deferred = []
            try:
                result = await self.hub.invoke(self, message.target, message.arguments)
            except HubError as exc:
                error = str(exc)
            except Exception:
                logger.exception("hub method %s failed", message.target)
                error = (f"An unexpected error occurred invoking '{message.target}' on the "
                         "server.")
        deferred, self._deferred = self._deferred, None
        if message.invocation_id is not None:
            if error is not None:
                self.send(p.completion_error(message.invocation_id, error))
            else:
                self.send(p.completion_result(message.invocation_id, result))
        for text in deferred or ():
            self.send(text)

    # -- timers (driven by the server's loop) -----------------------------------------

    def tick(
        self,
        now: float,
        *,
        keep_alive: float,
        client_timeout: float,
        handshake_timeout: float,
        disconnect_timeout: float,
    ) -> None:
        """Send a keep-alive ping or close on a timeout, as due at ``now``."""
        if self.closed:
            return
        if self.state is not ConnectionState.CONNECTED:
            if self.state is ConnectionState.HANDSHAKING and (
                now - self.created_at >= handshake_timeout
            ):
                self._protocol_error("handshake was not received in time")
                return
        if self.transport in (None, Transport.SSE, Transport.LONG_POLLING) or (
            self.stateful and not self.stream_attached
        ):
            if self.detached_since is not None and now - self.detached_since >= (
                disconnect_timeout
            ):
                self.close("Connection closed: the client went away.")
                return
        if self.state is not ConnectionState.CONNECTED:
            return
        # While input waits for the transport (flow control) the server is not reading,
        # so silence is not the client's: the drain timeout is in charge.
        if self._room is None and now - self.last_received >= client_timeout:
            self.close("Server timeout elapsed without receiving a message from the client.")
            return
        if self.stateful and self.stream_attached and self._in_latest > self._in_acked:
            self._in_acked = self._in_latest
            self._enqueue(p.ack_message(self._in_latest))
        if now - self.last_sent >= keep_alive:
            self._enqueue(p.PING)
