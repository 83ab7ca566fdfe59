"""Hooks 1 to 4, 9 and 10 (see the package docstring): the low-level server, and the session
manager that admits, counts, ends and parks legacy sessions and serves their GET streams."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import (
    LAST_EVENT_ID_HEADER,
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME, SessionEventStore
from colaflow_mcp.mcp.get_stream import GetStream, Pings
from colaflow_mcp.mcp.sdk_hooks.parking import (
    LIVE,
    PARK_AFTER_SECONDS,
    PARK_TICK_SECONDS,
    PARKED,
    PARKING,
    UNPARKING,
    SessionLife,
    _closed_streams,
    life_of,
)
from colaflow_mcp.mcp.sdk_hooks.transport import (
    LeanGetTransport,
    session_event_store,
    sse_headers,
)

logger = logging.getLogger(__name__)

# Who is opening a session: set by the endpoint around the request, read at admission
# (the SDK hands ``_admit_session`` only the credential's identity, not our principal).
_OPENING: ContextVar[Principal | None] = ContextVar("colaflow_mcp_opening", default=None)


def lowlevel_server(server: MCPServer) -> Server[Any]:
    """Hook 1: the low-level server behind ``server``."""
    lowlevel: Server[Any] = server._lowlevel_server
    return lowlevel


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

    # -- hook 10: a session's GET stream served before the manager ----------------------

    def direct_get_stream(self, scope: Scope, headers: Headers, user: AuthenticatedUser
                          ) -> tuple[LeanGetTransport, SessionEventStore, int] | None:
        """The session, its store and where its GET stream starts, if this request is a
        GET stream of a session that the SDK would serve as one (hooks 6 and 8) -- the
        same checks, in the same terms, as its manager and transport make; None for
        anything else (a refusal among them), which the SDK then answers as before."""
        if scope["method"] != "GET" or self._task_group is None or self.stateless:
            return None
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None  # the manager routes it to the 2026 era
        if headers.get("transfer-encoding") or headers.get("content-length", "0") != "0":
            return None  # a body: the SDK's body limit reads (and may refuse) it
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        transport = self._server_instances.get(session_id) if session_id else None
        if (not isinstance(transport, LeanGetTransport) or life_of(transport) is None
                or self._session_owners.get(session_id or "") != authorization_context(user)
                or transport.is_terminated or transport._read_stream_writer is None
                or transport._security.settings.enable_dns_rebinding_protection):
            return None
        idle_scope = transport.idle_scope
        if idle_scope is not None and idle_scope.cancel_called:
            return None  # timed out: the SDK ends it and answers 404
        if not check_accept_headers(Request(scope))[1]:
            return None  # 406 from the SDK
        store = session_event_store(transport)
        last_event_id = headers.get(LAST_EVENT_ID_HEADER) or GET_STREAM_RESUME
        after = store.get_stream_start(last_event_id) if store is not None else None
        if store is None or after is None:
            return None  # a request stream's resumption: the SDK's replay
        return transport, store, after

    async def serve_get_stream(self, transport: LeanGetTransport, store: SessionEventStore,
                               after: int, receive: Receive, send: Send, prelude: bytes,
                               pings: Pings) -> None:
        """Serve what :meth:`direct_get_stream` found: the session's GET stream, counted as
        a request in flight for its idle timeout as the SDK's transport counts it, and
        parked-idle bookkeeping as :class:`LeanGetTransport` does."""
        session_id = transport.mcp_session_id
        assert session_id is not None
        self._parked_idle.pop(session_id, None)
        idle_timeout = transport._idle_timeout
        counted = transport.idle_scope is not None and idle_timeout is not None
        if counted:
            transport._requests_in_flight += 1
            transport.idle_scope.deadline = math.inf  # type: ignore[union-attr]
        try:
            stream = GetStream(store, after, send, transport._encode_event)
            await stream.serve(sse_headers(session_id), receive, prelude, pings)
        finally:
            if counted:
                transport._requests_in_flight -= 1
                if not transport._requests_in_flight and transport.idle_scope is not None:
                    transport.idle_scope.deadline = anyio.current_time() + idle_timeout  # type: ignore[operator]
            life = life_of(transport)
            if (life is not None and life.state == PARKED
                    and not transport._requests_in_flight
                    and self.session_idle_timeout is not None):
                self._note_parked_idle(session_id,
                                       anyio.current_time() + self.session_idle_timeout)
        if transport.is_terminated:  # as the SDK's manager after a request
            await self._discard_session(session_id, transport)

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
