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
10. A session's GET stream served before the manager. A held GET that went through the
    SDK keeps its whole request path for the session's life (the manager's body-limit
    middleware with its replay closure, ``_handle_stateful_request`` and the transport's
    ``handle_request``/``_handle_get_request`` frames, two ``Request`` objects, our scope
    copy and wrapped ``send``s: ~5 KiB per idle session, issue 14).
    :meth:`SessionManager.direct_get_stream` makes the checks the SDK makes on that path,
    in its terms — a GET with no body (``RequestBodyLimitMiddleware``), a protocol version
    the legacy handshake knows (else the manager routes it to the 2026 era), the session
    id in ``_server_instances`` with the same owner in ``_session_owners``
    (``authorization_context`` of the caller), the transport not terminated, not timed out
    (``idle_scope.cancel_called``), DNS-rebinding checks off (the endpoint makes them), an
    ``Accept`` with ``text/event-stream`` (``check_accept_headers``), and a
    ``Last-Event-ID`` the store serves (hooks 6 and 8) — and
    :meth:`SessionManager.serve_get_stream` serves it with ``get_stream.GetStream``,
    counting it in the transport's ``_requests_in_flight`` against ``idle_scope`` as
    ``StreamableHTTPServerTransport.handle_request`` does, and discarding a session that
    ended meanwhile as the manager does after a request. Anything else — every refusal
    included — goes to the SDK as before, so errors are the SDK's own.
11. A modern ``subscriptions/listen`` stream served before the manager. Through the SDK a
    held listen keeps its modern entry's task group (``_streamable_http_modern.
    handle_modern_request``: the handler's task with its ``ServerRunner``, ``Connection``,
    session and context, a task waiting for the disconnect, a memory stream, a
    ``move_on_after`` per ping: ~35 KiB per idle listener, issue 14). ``modern.read_body``
    and ``modern.listen_request`` make the checks the manager and that entry make before
    dispatch, with the SDK's functions and in its order — the body limit
    (``RequestBodyLimitMiddleware``), the routing to the entry (``MCP-Protocol-Version``
    not a handshake version, ``_handle_request``), Content-Type
    (``TransportSecurityMiddleware``), POST, an ``Mcp-Method`` header naming the listen
    (``classify_inbound_request`` requires it to match the body; other requests go to the
    SDK without their body read), ``check_accept_headers`` (JSON and SSE),
    the JSON body, a request (not notification-shaped, ``JSONRPCRequest``), the method,
    ``find_duplicated_routing_header`` and ``classify_inbound_request`` (``Mcp-Param``
    checks apply to ``tools/call`` only). ``modern.open_listen`` then runs the SDK's own
    ``serve_one`` as the entry does (``Connection.from_envelope``, the entry's
    ``_SingleExchangeDispatchContext`` with a sink collecting frames, the manager's
    ``_lifespan_state``): the server's middleware, the params validation, our handler
    (which acks and, told by ``subscriptions.DIRECT_OPEN``, hands its subscriber over and
    returns) and the result's serialisation; the ack and the final result are framed by
    the SDK (``_sse_event``), the head is its ``_SSE_HEADERS``, a later update is framed
    as ``ServerSession._notify`` and the dispatch context's ``notify`` frame it
    (``modern.encode_notification``). ``listen_stream.DirectListen`` serves the stream
    from there; the endpoint's pinger sends the SDK's ``: ping`` comment. A request that
    fails a check, or whose pipeline raises (too many URIs, bad params), goes to the SDK
    with its body replayed, so errors are the SDK's own.
12. ``ServerRunner.on_request`` / ``on_notify`` — ``cached_property``s whose cached bound
    method makes each runner a reference cycle (the runner, its ``Connection`` and what
    that holds wait for the cyclic collector: ~10 MiB of heap after a burst of modern
    requests, issue 14). ``modern.runners_freed_by_refcount`` makes them plain properties
    (a bound method per read), so a request's runner is freed when it returns.
"""

# What the rest of the package's users need; the parts' own names stay in their modules.
from colaflow_mcp.mcp.sdk_hooks.modern import (
    SSE_HEADERS,
    encode_notification,
    listen_request,
    manager_running,
    may_be_listen,
    open_listen,
    read_body,
    runners_freed_by_refcount,
)
from colaflow_mcp.mcp.sdk_hooks.parking import LIVE, SessionActivity, life_of
from colaflow_mcp.mcp.sdk_hooks.sessions import SessionLimitReached, SessionManager, lowlevel_server
from colaflow_mcp.mcp.sdk_hooks.transport import (
    LeanGetTransport,
    disable_sse_ping_tasks,
    serve_get_from_store,
    session_event_store,
    sse_headers,
)

__all__ = [
    "LIVE",
    "SSE_HEADERS",
    "encode_notification",
    "listen_request",
    "manager_running",
    "may_be_listen",
    "open_listen",
    "read_body",
    "runners_freed_by_refcount",
    "LeanGetTransport",
    "SessionActivity",
    "SessionLimitReached",
    "SessionManager",
    "disable_sse_ping_tasks",
    "life_of",
    "lowlevel_server",
    "serve_get_from_store",
    "session_event_store",
    "sse_headers",
]
