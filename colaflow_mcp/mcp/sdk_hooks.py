"""Every private coupling to the ``mcp`` SDK, in one place (pinned: ``mcp==2.3.*``).

The SDK gives no public way to do these; each is checked by tests/mcp/test_sdk_hooks.py,
which fails with a clear message if an upgrade renames, re-signs or stops calling one.

1. ``MCPServer._lowlevel_server`` — the low-level server behind ``MCPServer``: the only way
   to register ``resources/subscribe`` / ``resources/unsubscribe`` (``MCPServer`` does not
   serve them), to replace the ``subscriptions/listen`` handler (to gate it by tenant) and
   to add the middleware that exposes the caller's principal.
2. ``StreamableHTTPSessionManager._admit_session(requestor)`` — called synchronously (under
   the manager's creation lock) when a session is created, and builds its transport from
   ``self.event_store``: overridden so each session gets an event store of its own (a
   shared store cannot tell sessions apart: every session's GET stream has the same stream
   id), and to refuse a key over its session limit by raising, which reaches the endpoint
   before anything is sent.
3. ``StreamableHTTPSessionManager._discard_session(session_id, transport)`` — the one
   place every session end passes through (DELETE, idle timeout, crash, shutdown; possibly
   more than once per session): overridden to drop the session's subscriptions and end its
   GET stream.
4. ``StreamableHTTPSessionManager._server_instances`` — the session table: how a key's
   live sessions are counted and how the revocation pass ends the sessions of a revoked
   key. With ``._session_owners`` (each session's owner): renamed in ``_admit_session`` to
   the session id with the instance's routing tag (the SDK makes the id itself, a plain
   uuid; a load balancer routes a session by the tag, docs/scale-out.md).
5. ``StreamableHTTPServerTransport._event_store`` — the session's store, closed when the
   session ends (its GET stream is served from the store and ends with it).
6. The transport's GET handling: a GET with ``Last-Event-ID`` is served by
   ``EventStore.replay_events_after`` alone. :func:`serve_get_from_store` adds that header
   to every GET of a session, so the whole GET stream is served from the store
   (``event_store.SessionEventStore``), with no gap between replay and live updates.
7. sse-starlette's ``EventSourceResponse.DEFAULT_PING_INTERVAL`` — the SDK builds its
   legacy SSE responses without ``ping=``, so each gets this default, and with it a ping
   task per open stream (~5 KiB per idle session). :func:`disable_sse_ping_tasks` sets it
   to 0 (sse-starlette then starts no ping task); ``keepalive.SseKeepAlive`` pings the
   endpoint's streams from one task instead.
8. ``StreamableHTTPServerTransport._replay_events(last_event_id, request, send)`` — what
   the transport's GET handling calls, after validating the request, for a GET with
   ``Last-Event-ID``; with ``_create_event_data(event_message)``, how it frames an event
   for sse-starlette, and ``CONTENT_TYPE_SSE``. Each session's transport is made a
   :class:`LeanGetTransport` (its class swapped when admitted, no per-session cost) whose
   ``_replay_events`` serves a GET-stream resumption with ``get_stream.GetStream``
   instead of an sse-starlette response with its task group: the same head and the same
   bytes per event, no task while idle. Request-stream resumptions go to the SDK.
9. Parking an idle session. The SDK runs each session as a task in its manager's task group
   (``_serve_opening_request`` starts it: ``transport.connect()``, then ``serve_loop`` —
   a ``JSONRPCDispatcher``, a ``Connection`` and a ``ServerRunner`` — inside the transport's
   ``idle_scope``): ~30 KiB of tasks, task groups, cancel scopes, memory streams and Events
   per session, kept while the session does nothing (issue 14). Our ``SessionManager``
   overrides ``_serve_opening_request`` to run the same recipe in
   :meth:`SessionManager._run_life` (public SDK pieces: ``JSONRPCDispatcher``,
   ``Connection.for_loop``, ``serve_connection``; with ``inline_methods={"initialize"}`` as
   ``serve_loop`` has it), which it can end and start again: a session with no request
   in flight (its GET stream aside) for :data:`PARK_AFTER_SECONDS` is *parked* — its life
   is cancelled, which ends the dispatcher, the runner and the transport's message router
   (``connect()`` exits), and what the session negotiated (``Connection.client_params``,
   ``protocol_version``, whether ``notifications/initialized`` came) is kept on its
   :class:`SessionLife`. The transport itself stays in ``_server_instances`` (so the
   session id, its owner, the session caps and the metric are unchanged), with its event
   store. A GET stream needs no life (hook 8 serves it from the store; the transport's
   ``_handle_get_request`` only checks that ``_read_stream_writer`` is set — the closed one
   of the last life is), nor does a DELETE (``_handle_delete_request`` → ``terminate()``
   closes the last life's streams again, which is a no-op). A POST, or a GET resuming a
   request stream, un-parks first (:meth:`LeanGetTransport.handle_request`): a new life on
   the same transport (``connect()`` makes fresh streams and a fresh ``idle_scope``), its
   ``Connection`` given the saved state, so it is initialized as before (a connection's
   ``state`` scratch dict and ``exit_stack`` are not kept: neither the SDK's server nor
   our handlers use them; anything pushed on the exit stack would run at each park). The
   SDK's own
   idle timeout keeps working while a session lives (the transport counts requests in
   flight across lives); a parked session with no request in flight expires by the same
   deadline through :meth:`SessionManager._expire_parked`. Resource updates reach a parked
   session because ``subscriptions.LegacySession`` stores them in the session's event
   store itself (what the SDK's router would have done), not through the SDK's session.
"""


from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, Final

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    EventMessage,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME, SessionEventStore
from colaflow_mcp.mcp.get_stream import GetStream

logger = logging.getLogger(__name__)

# Who is opening a session: set by the endpoint around the request, read at admission
# (the SDK hands ``_admit_session`` only the credential's identity, not our principal).
_OPENING: ContextVar[Principal | None] = ContextVar("colaflow_mcp_opening", default=None)

# Hook 9: a session with no request in flight but its GET stream for this long is parked.
# Long enough that an agent working in a session (a call every few seconds) never parks
# and un-parks per call; short against the idle timeout (30 min by default).
PARK_AFTER_SECONDS: Final = 10.0
PARK_TICK_SECONDS: Final = 1.0  # how often the parker looks (one task for all sessions)
# Where the transport's request puts the session's life, for ``SessionActivity``.
LIFE_SCOPE_KEY: Final = "colaflow.session_life"

LIVE, PARKING, PARKED, UNPARKING = "live", "parking", "parked", "unparking"


def lowlevel_server(server: MCPServer) -> Server[Any]:
    """Hook 1: the low-level server behind ``server``."""
    lowlevel: Server[Any] = server._lowlevel_server
    return lowlevel


class SessionLife:
    """Hook 9: one legacy session's park state, kept on its transport for the session's
    life. ``busy`` counts what needs the SDK's session: requests in flight other than the
    GET stream and DELETE (POSTs, request-stream resumptions) and handlers still running
    (a handler outlives its POST if the client went away meanwhile)."""

    __slots__ = ("manager", "session_id", "state", "busy", "scope", "transition",
                 "connection", "saved")

    def __init__(self, manager: SessionManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.state = LIVE
        self.busy = 0
        self.scope: anyio.CancelScope | None = None  # the running life's own scope
        self.transition: anyio.Event | None = None  # exists while parking or un-parking
        self.connection: Connection | None = None  # the running life's
        # What the session negotiated, while parked: (client params, protocol version,
        # whether notifications/initialized came).
        self.saved: tuple[types.InitializeRequestParams | None, str, bool] | None = None

    def enter(self) -> None:
        if not self.busy:
            self.manager._idle.pop(self.session_id, None)
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        if not self.busy and self.state == LIVE:
            idle = self.manager._idle
            idle[self.session_id] = anyio.current_time()
            idle.move_to_end(self.session_id)

    def keep(self, connection: Connection) -> None:
        """Parking: keep what the session negotiated."""
        self.saved = (connection.client_params, connection.protocol_version,
                      connection.initialized.is_set())

    def restore(self, connection: Connection) -> None:
        """Un-parking: the new life's connection is initialized as the last one was."""
        saved, self.saved = self.saved, None
        if saved is None:
            return
        client_params, protocol_version, initialized = saved
        if client_params is not None:
            connection.client_params = client_params
        connection.protocol_version = protocol_version
        if initialized:
            connection.initialized.set()


class SessionActivity:
    """Hook 9: SDK server middleware counting a legacy session's running handlers as busy
    (a session is not parked under a handler whose POST has gone)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        scope = getattr(ctx.request, "scope", None)
        life = scope.get(LIFE_SCOPE_KEY) if isinstance(scope, dict) else None
        if not isinstance(life, SessionLife):
            return await call_next(ctx)
        life.enter()
        try:
            return await call_next(ctx)
        finally:
            life.leave()


class SessionLimitReached(Exception):
    """A key asked for one more session than its limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"session limit {limit} reached")
        self.limit = limit


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's manager with hooks 2-5: an event store per session, a cap on each API
    key's live sessions, a callback when a session ends, and a way to end a session."""

    def __init__(self, *, make_event_store: Callable[[], SessionEventStore],
                 on_session_end: Callable[[str], None], max_per_key: int,
                 tagged: Callable[[str], str] = str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make_event_store = make_event_store
        self._tagged = tagged  # puts the instance's routing tag in front of a session id
        self._on_session_end = on_session_end
        self.max_per_key = max_per_key
        self._key_of: dict[str, str] = {}  # session id -> API key id
        self._sessions_of: dict[str, set[str]] = {}  # API key id -> its session ids
        # Hook 9. Live sessions with nothing in flight, oldest first (session id -> since);
        # parked ones with no request in flight at all (session id -> idle deadline).
        self._idle: OrderedDict[str, float] = OrderedDict()
        self._parked_idle: dict[str, float] = {}
        self.parked = 0

    @contextmanager
    def opening(self, principal: Principal) -> Iterator[None]:
        """Requests inside may open a session for ``principal`` (counted, capped)."""
        token = _OPENING.set(principal)
        try:
            yield
        finally:
            _OPENING.reset(token)

    def live_sessions(self, key_id: str) -> int:
        """Hook 4: sessions of the key not yet ended (a DELETE or revocation ends one at
        once)."""
        live = 0
        for session_id in self._sessions_of.get(key_id, ()):
            transport = self._server_instances.get(session_id)
            if transport is not None and not transport.is_terminated:
                live += 1
        return live

    def key_ids(self) -> set[str]:
        """The API keys holding sessions."""
        return set(self._sessions_of)

    def sessions_of(self, key_id: str) -> list[str]:
        """The session ids a key holds."""
        return list(self._sessions_of.get(key_id, ()))

    def _admit_session(self, requestor: AuthorizationContext | None
                       ) -> StreamableHTTPServerTransport | None:
        # Hook 2, called under the manager's creation lock with no await between the count
        # and the registration, so concurrent opens cannot overshoot the cap.
        principal = _OPENING.get()
        key_id = principal.api_key_id if principal is not None else None
        if key_id is not None and self.live_sessions(key_id) >= self.max_per_key:
            raise SessionLimitReached(self.max_per_key)
        # The transport takes ``self.event_store`` when it is built here.
        self.event_store = self._make_event_store()
        try:
            transport = super()._admit_session(requestor)
        finally:
            self.event_store = None
        if transport is not None:
            self._tag(transport)
            transport.__class__ = LeanGetTransport  # hook 8
            assert transport.mcp_session_id is not None
            transport.life = SessionLife(self, transport.mcp_session_id)  # type: ignore[attr-defined]
        if transport is not None and key_id is not None:
            session_id = transport.mcp_session_id
            assert session_id is not None
            self._key_of[session_id] = key_id
            self._sessions_of.setdefault(key_id, set()).add(session_id)
        return transport

    def _tag(self, transport: StreamableHTTPServerTransport) -> None:
        """Hook 4: rename the new session to its tagged id, in the SDK's tables, before its
        task starts or its id is sent."""
        old = transport.mcp_session_id
        assert old is not None
        new = self._tagged(old)
        transport.mcp_session_id = new
        self._server_instances[new] = self._server_instances.pop(old)
        if old in self._session_owners:
            self._session_owners[new] = self._session_owners.pop(old)

    async def _discard_session(self, session_id: str,
                               transport: StreamableHTTPServerTransport) -> None:
        # Hook 3, reached on DELETE, idle timeout, crash and shutdown (maybe more than once).
        self._idle.pop(session_id, None)
        self._parked_idle.pop(session_id, None)
        life = life_of(transport)
        if life is not None and life.state == PARKED:
            life.state = LIVE  # ended: no longer parked
            self.parked -= 1
        self._forget(session_id)
        self._on_session_end(session_id)
        store = session_event_store(transport)
        if store is not None:
            store.close()
        await super()._discard_session(session_id, transport)

    def _forget(self, session_id: str) -> None:
        key_id = self._key_of.pop(session_id, None)
        ids = self._sessions_of.get(key_id or "")
        if key_id is None or ids is None:
            return
        ids.discard(session_id)
        if not ids:
            del self._sessions_of[key_id]

    def end_get_streams(self) -> None:
        """Hooks 4 and 5: end every session's open GET stream (the sessions stay)."""
        for transport in list(self._server_instances.values()):
            store = session_event_store(transport)
            if store is not None:
                store.end_get_stream()

    def session_ids(self) -> list[str]:
        """Hook 4: the ids of the live sessions."""
        return list(self._server_instances)

    async def terminate(self, session_id: str) -> int:
        """Hook 4: end a session (1 if it was live); its end then passes through
        ``_discard_session`` (a parked session has no life whose end would do that)."""
        transport = self._server_instances.get(session_id)
        if transport is not None and not transport.is_terminated:
            await transport.terminate()
            life = life_of(transport)
            if life is not None and life.state == PARKED:
                await self._discard_session(session_id, transport)
            return 1
        return 0

    def event_store_of(self, session_id: str) -> SessionEventStore | None:
        """Hooks 4 and 5: a live session's event store."""
        transport = self._server_instances.get(session_id)
        return session_event_store(transport) if transport is not None else None

    # -- hook 9: parking ------------------------------------------------------------------

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with super().run():
            assert self._task_group is not None
            self._task_group.start_soon(self._parker)
            try:
                yield
            finally:
                # Live sessions are discarded as their lives are cancelled; parked ones
                # have none.
                for session_id, transport in list(self._server_instances.items()):
                    life = life_of(transport)
                    if life is not None and life.state == PARKED:
                        await self._discard_session(session_id, transport)

    async def _serve_opening_request(self, http_transport: StreamableHTTPServerTransport,
                                     scope: Scope, receive: Receive, send: Send) -> None:
        # As the SDK's: start the session's life, let the transport answer the request that
        # opens it, and discard the session unless that established it.
        session_id = http_transport.mcp_session_id
        assert session_id is not None and self._task_group is not None
        status: int | None = None

        async def watch_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        established = False
        try:
            await self._task_group.start(self._run_life, http_transport)
            await http_transport.handle_request(scope, receive, watch_status)
            established = status is not None and status < 400
        finally:
            if not established:
                await self._discard_session(session_id, http_transport)

    async def _run_life(self, transport: StreamableHTTPServerTransport, *,
                        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """One life of a session: what the SDK's ``run_server`` does (``connect()``, then
        ``serve_loop``'s dispatcher and connection inside the idle scope), ending either
        with the session (then discarded) or because the session is being parked."""
        session_id = transport.mcp_session_id
        life = life_of(transport)
        assert session_id is not None and life is not None
        parking = False
        try:
            async with transport.connect() as (read_stream, write_stream):
                idle_scope = transport.idle_scope
                if idle_scope is None:
                    idle_scope = anyio.CancelScope()
                life.scope = anyio.CancelScope()
                life.state = LIVE
                task_status.started()
                try:
                    with idle_scope, life.scope:
                        dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                            read_stream, write_stream, inline_methods=frozenset({"initialize"}))
                        connection = Connection.for_loop(dispatcher, session_id=session_id)
                        life.restore(connection)
                        life.connection = connection
                        if transport.is_terminated:  # ended (DELETE) while un-parking
                            return
                        await serve_connection(self.app, dispatcher, connection=connection,
                                               lifespan_state=self._lifespan_state)
                    parking = life.scope.cancelled_caught
                    if idle_scope.cancelled_caught:
                        logger.info("Session %s idle timeout", session_id)
                finally:
                    life.scope = None
                    life.connection = None
        except Exception:
            logger.exception("Session %s crashed", session_id)
        finally:
            if parking and not transport.is_terminated:
                self._parked(transport, life)
            else:
                life.state = LIVE
                await self._discard_session(session_id, transport)
            transition, life.transition = life.transition, None
            if transition is not None:
                transition.set()

    def _parked(self, transport: StreamableHTTPServerTransport, life: SessionLife) -> None:
        life.state = PARKED
        self.parked += 1
        # The last life's streams are closed; shared closed ones do the same while parked
        # (a GET checks only that the read stream's writer is set, a DELETE closes them
        # again) and the next life's ``connect()`` replaces them.
        send, receive = _closed_streams()
        transport._read_stream_writer = send  # type: ignore[assignment]
        transport._write_stream = send  # type: ignore[assignment]
        transport._read_stream = receive  # type: ignore[assignment]
        transport._write_stream_reader = receive  # type: ignore[assignment]
        if not transport._requests_in_flight:
            # Nothing in flight (no GET stream): it expires when the SDK's idle timer set
            # by its last request would have fired.
            deadline = transport.idle_scope.deadline if transport.idle_scope else math.inf
            self._note_parked_idle(life.session_id, deadline)

    def _note_parked_idle(self, session_id: str, deadline: float) -> None:
        if self.session_idle_timeout is not None and deadline != math.inf:
            self._parked_idle[session_id] = deadline

    async def park(self, session_id: str) -> bool:
        """Park the session now if it is live with nothing in flight but its GET stream
        (True if it was parked)."""
        transport = self._server_instances.get(session_id)
        life = life_of(transport) if transport is not None else None
        if (transport is None or life is None or life.state != LIVE or life.busy
                or life.scope is None or life.connection is None or transport.is_terminated):
            return False
        self._idle.pop(session_id, None)
        life.state = PARKING
        life.keep(life.connection)
        transition = life.transition = anyio.Event()
        life.scope.cancel()
        await transition.wait()
        return life.state == PARKED

    async def park_idle(self, idle_since: float = math.inf) -> int:
        """Park the live sessions idle since ``idle_since`` or earlier (all idle ones by
        default: the tests' knob). Returns how many were parked."""
        parked = 0
        while self._idle:
            session_id, since = next(iter(self._idle.items()))
            if since > idle_since:
                break
            del self._idle[session_id]
            parked += await self.park(session_id)
        return parked

    async def unpark(self, transport: StreamableHTTPServerTransport) -> None:
        """Give a parked (or parking) session a life again, initialized as before."""
        life = life_of(transport)
        while life is not None and life.state != LIVE and not transport.is_terminated:
            if life.transition is not None:
                await life.transition.wait()
                continue
            assert self._task_group is not None
            self._parked_idle.pop(life.session_id, None)
            life.state = UNPARKING
            self.parked -= 1
            transition = life.transition = anyio.Event()
            try:
                await self._task_group.start(self._run_life, transport)
            except BaseException:
                life.state = PARKED
                self.parked += 1
                raise
            finally:
                life.transition = None
                transition.set()

    async def _expire_parked(self, now: float) -> int:
        """End the parked sessions whose idle deadline passed (as the SDK's idle timeout
        ends a live one)."""
        due = [sid for sid, deadline in self._parked_idle.items() if deadline <= now]
        for session_id in due:
            self._parked_idle.pop(session_id, None)
            transport = self._server_instances.get(session_id)
            life = life_of(transport) if transport is not None else None
            if transport is None or life is None or life.state != PARKED:
                continue
            logger.info("Session %s idle timeout", session_id)
            await transport.terminate()
            await self._discard_session(session_id, transport)
        return len(due)

    async def _parker(self) -> None:
        """One task for all sessions: park the idle ones, expire the parked idle ones."""
        while True:
            await anyio.sleep(PARK_TICK_SECONDS)
            try:
                now = anyio.current_time()
                await self.park_idle(now - PARK_AFTER_SECONDS)
                await self._expire_parked(now)
            except Exception:
                logger.exception("parking idle MCP sessions failed")


_CLOSED: tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]] | None = None


def _closed_streams() -> tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]:
    """Hook 9: one closed pair of memory streams, shared by every parked transport."""
    global _CLOSED
    if _CLOSED is None:
        send, receive = anyio.create_memory_object_stream[Any](0)
        send.close()
        receive.close()
        _CLOSED = (send, receive)
    return _CLOSED


def life_of(transport: StreamableHTTPServerTransport | None) -> SessionLife | None:
    """Hook 9: the session's park state."""
    life = getattr(transport, "life", None)
    return life if isinstance(life, SessionLife) else None


def session_event_store(transport: StreamableHTTPServerTransport) -> SessionEventStore | None:
    """Hook 5: the session's own event store."""
    store = transport._event_store
    return store if isinstance(store, SessionEventStore) else None


def serve_get_from_store(scope: Scope) -> None:
    """Hook 6: a GET without ``Last-Event-ID`` gets ours, so the store serves it (resuming
    after what the session's earlier GET streams were sent, so nothing sent while none was
    open is lost). Changes ``scope`` itself: the endpoint's own copy, held as long as the
    stream is open (one copy per idle session, not two)."""
    header = LAST_EVENT_ID_HEADER.encode()
    if any(k == header and v for k, v in scope["headers"]):
        return
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != header]
    scope["headers"].append((header, GET_STREAM_RESUME.encode()))


def disable_sse_ping_tasks() -> None:
    """Hook 7: no per-stream ping task in the SDK's SSE responses (the endpoint pings them
    all from one task). Process-wide; the SDK is sse-starlette's only user here."""
    EventSourceResponse.DEFAULT_PING_INTERVAL = 0


class LeanGetTransport(StreamableHTTPServerTransport):
    """Hook 8: the SDK's transport, with GET streams served by ``get_stream.GetStream``;
    hook 9: a request that needs the SDK's session un-parks it first."""

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        life = life_of(self)
        if life is None:
            await super().handle_request(scope, receive, send)
            return
        manager = life.manager
        manager._parked_idle.pop(life.session_id, None)
        if scope["method"] == "DELETE" or _is_get_stream(scope):
            try:
                await super().handle_request(scope, receive, send)
            finally:
                if life.state == PARKED and not self._requests_in_flight:
                    timeout = manager.session_idle_timeout
                    if timeout is not None:
                        manager._note_parked_idle(life.session_id,
                                                  anyio.current_time() + timeout)
            return
        life.enter()
        try:
            if life.state != LIVE:
                await manager.unpark(self)
            scope[LIFE_SCOPE_KEY] = life
            await super().handle_request(scope, receive, send)
        finally:
            life.leave()

    async def _replay_events(self, last_event_id: str, request: Request, send: Send) -> None:
        store = session_event_store(self)
        after = store.get_stream_start(last_event_id) if store is not None else None
        if store is None or after is None:
            await super()._replay_events(last_event_id, request, send)
            return
        stream = GetStream(store, after, send, self._encode_event)
        await stream.serve(sse_headers(self.mcp_session_id), request.receive)

    def _encode_event(self, message: types.JSONRPCMessage, event_id: str) -> bytes:
        """One event as the SDK's SSE responses put it on the wire."""
        return ensure_bytes(self._create_event_data(EventMessage(message, event_id)),
                            EventSourceResponse.DEFAULT_SEPARATOR)


def _is_get_stream(scope: Scope) -> bool:
    """A GET served as the session's GET stream (hooks 6 and 8: ``g`` ids)."""
    if scope["method"] != "GET":
        return False
    header = LAST_EVENT_ID_HEADER.encode()
    value = next((v for k, v in scope["headers"] if k == header), b"")
    return value.startswith(b"g")


def sse_headers(session_id: str | None) -> list[tuple[bytes, bytes]]:
    """Hook 8: the head of the SDK's SSE responses (its headers, then sse-starlette's)."""
    headers = [(b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
               (b"content-type", CONTENT_TYPE_SSE.encode())]
    if session_id:
        headers.append((MCP_SESSION_ID_HEADER.encode(), session_id.encode()))
    headers.append((b"x-accel-buffering", b"no"))
    return headers
