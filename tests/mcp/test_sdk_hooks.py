"""Canary for colaflow_mcp/mcp/sdk_hooks/: the pinned mcp SDK still has, and still calls,
every private hook we rely on. If one of these fails after an SDK upgrade, read the
numbered hook in the sdk_hooks package's docstring before changing anything else."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server import runner
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import (
    LAST_EVENT_ID_HEADER,
    EventMessage,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import RequestBodyLimitMiddleware
from sse_starlette import EventSourceResponse

from colaflow_mcp.mcp import sdk_hooks
from colaflow_mcp.mcp.event_store import GET_STREAM_RESUME, SessionEventStore
from tests.harness import Harness
from tests.mcp.mcpenv import mcp_client, propose_issue

pytestmark = pytest.mark.anyio


def _hook(number: int, what: str) -> str:
    return (f"mcp SDK changed under sdk_hooks hook {number}: {what}. See the hook's "
            "entry in colaflow_mcp/mcp/sdk_hooks/__init__.py.")


def _parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_sdk_still_has_every_private_hook_with_the_expected_shape() -> None:
    server = MCPServer("canary")
    lowlevel = getattr(server, "_lowlevel_server", None)
    assert isinstance(lowlevel, Server), _hook(1, "MCPServer._lowlevel_server is gone")
    assert callable(getattr(lowlevel, "add_request_handler", None)) and isinstance(
        getattr(lowlevel, "middleware", None), list), _hook(
        1, "the low-level server has no add_request_handler or middleware list")

    admit = getattr(StreamableHTTPSessionManager, "_admit_session", None)
    assert admit is not None and _parameters(admit) == ["self", "requestor"], _hook(
        2, "StreamableHTTPSessionManager._admit_session(requestor) is gone or re-signed")
    discard = getattr(StreamableHTTPSessionManager, "_discard_session", None)
    assert discard is not None and inspect.iscoroutinefunction(discard) and _parameters(
        discard) == ["self", "session_id", "transport"], _hook(
        3, "async StreamableHTTPSessionManager._discard_session(session_id, transport) is "
           "gone or re-signed")

    manager = StreamableHTTPSessionManager(app=lowlevel)
    assert isinstance(getattr(manager, "_server_instances", None), dict), _hook(
        4, "StreamableHTTPSessionManager._server_instances is no longer the session table")
    assert isinstance(getattr(manager, "_session_owners", None), dict), _hook(
        4, "StreamableHTTPSessionManager._session_owners no longer holds sessions' owners")

    store = SessionEventStore(4)
    transport = StreamableHTTPServerTransport(mcp_session_id="canary", event_store=store)
    assert getattr(transport, "_event_store", None) is store, _hook(
        5, "StreamableHTTPServerTransport._event_store no longer holds the session's store")
    assert sdk_hooks.session_event_store(transport) is store

    assert LAST_EVENT_ID_HEADER == "last-event-id", _hook(6, "the Last-Event-ID header name")

    assert isinstance(getattr(EventSourceResponse, "DEFAULT_PING_INTERVAL", None), int), _hook(
        7, "sse-starlette's EventSourceResponse.DEFAULT_PING_INTERVAL is gone")
    assert "ping=" not in inspect.getsource(StreamableHTTPServerTransport), _hook(
        7, "the SDK now sets its SSE responses' ping interval itself")
    sdk_hooks.disable_sse_ping_tasks()
    assert EventSourceResponse(content=iter(())).ping_interval == 0, _hook(
        7, "an SSE response built without ping= no longer takes the class default")

    replay_events = getattr(StreamableHTTPServerTransport, "_replay_events", None)
    assert replay_events is not None and inspect.iscoroutinefunction(replay_events) and (
        _parameters(replay_events) == ["self", "last_event_id", "request", "send"]), _hook(
        8, "async StreamableHTTPServerTransport._replay_events(last_event_id, request, send) "
           "is gone or re-signed")
    get_source = inspect.getsource(StreamableHTTPServerTransport._handle_get_request)
    assert "await self._replay_events(last_event_id, request, send)" in get_source, _hook(
        8, "the transport's GET handling no longer hands a resumption to _replay_events")
    # Our GET stream's head is the SDK's: its headers as sse-starlette completes them.
    replay_source = inspect.getsource(replay_events)
    sdk_headers = {"Cache-Control": "no-cache, no-transform", "Connection": "keep-alive",
                   "Content-Type": "text/event-stream", "mcp-session-id": "canary"}
    for name, value in sdk_headers.items():
        if name != "mcp-session-id":
            assert f'"{name}": ' in replay_source and (
                f'"{value}"' in replay_source or name == "Content-Type"), _hook(
                8, f"the SDK's SSE responses no longer send {name}: {value}")
    assert sdk_hooks.sse_headers("canary") == EventSourceResponse(
        content=iter(()), headers=sdk_headers).raw_headers, _hook(
        8, "sse-starlette completes the SDK's SSE headers differently")
    message = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/canary")
    framed = transport._create_event_data(EventMessage(message, "g7"))
    assert framed == {"event": "message", "id": "g7", "data": message.model_dump_json(
        by_alias=True, exclude_unset=True)}, _hook(
        8, "the SDK frames an SSE event differently (_create_event_data)")
    _check_hook_9()
    _check_hook_10()
    _check_hook_11()
    transport.__class__ = sdk_hooks.LeanGetTransport
    assert transport._encode_event(message, "g7") == (
        b"id: g7\r\nevent: message\r\ndata: " + message.model_dump_json(
            by_alias=True, exclude_unset=True).encode() + b"\r\n\r\n")


def _check_hook_10() -> None:
    """What ``SessionManager.direct_get_stream`` checks is what the SDK's path checks."""
    def source(fn: Callable[..., Any]) -> str:
        return inspect.getsource(fn)

    manager = StreamableHTTPSessionManager(app=Server("canary"))
    assert isinstance(manager.asgi_app, RequestBodyLimitMiddleware) and (
        manager.asgi_app.app == manager._handle_request), _hook(
        10, "the manager's requests no longer pass its body limit, then _handle_request")
    routing = source(StreamableHTTPSessionManager._handle_request)
    assert "pv not in HANDSHAKE_PROTOCOL_VERSIONS" in routing and (
        "self._handle_stateful_request(scope, receive, send)" in routing), _hook(
        10, "the manager routes a request to the legacy era differently")
    stateful = source(StreamableHTTPSessionManager._handle_stateful_request)
    for line in ("request_mcp_session_id in self._server_instances",
                 "requestor != self._session_owners.get(request_mcp_session_id)",
                 "await transport.handle_request(scope, receive, send)",
                 "if transport.is_terminated:"):
        assert line in stateful, _hook(10, f"the manager's session path changed ({line})")
    handle = source(StreamableHTTPServerTransport.handle_request)
    for line in ("self.idle_scope.cancel_called", "self._requests_in_flight += 1",
                 "self.idle_scope.deadline = math.inf",
                 "self.idle_scope.deadline = anyio.current_time() + self._idle_timeout"):
        assert line in handle, _hook(10, f"the transport counts requests differently ({line})")
    inner = source(StreamableHTTPServerTransport._handle_request)
    assert inner.index("self._security.validate_request(") < inner.index(
        "if self._terminated:") < inner.index("await self._handle_get_request("), _hook(
        10, "the transport checks a request differently before its GET handling")
    get = source(StreamableHTTPServerTransport._handle_get_request)
    assert get.index("check_accept_headers(request)") < get.index(
        "self._validate_request_headers(request, send)") < get.index(
        "await self._replay_events(last_event_id, request, send)"), _hook(
        10, "the transport's GET handling checks something new before a resumption")
    assert "return await self._validate_session(request, send)" in source(
        StreamableHTTPServerTransport._validate_request_headers), _hook(
        10, "the transport validates more headers than the session id")
    assert _parameters(check_accept_headers) == ["request"], _hook(
        10, "check_accept_headers(request) is gone or re-signed")


def _check_hook_11() -> None:
    """The modern entry still checks, dispatches and frames a listen the way
    ``sdk_hooks.modern`` mirrors it."""
    from mcp.server import _streamable_http_modern as modern
    from mcp.server.session import ServerSession
    from mcp.server.transport_security import TransportSecurityMiddleware

    def ordered(source: str, *parts: str) -> bool:
        at = 0
        for part in parts:
            at = source.find(part, at)
            if at < 0:
                return False
        return True

    entry = inspect.getsource(modern.handle_modern_request)
    assert ordered(
        entry, "security.validate_request(request, is_post=(request.method == \"POST\"))",
        'if request.method != "POST":', "check_accept_headers(request)",
        "if not has_json or (not json_response and not has_sse):", "await request.body()",
        "json.loads(body)", "_is_notification_shaped(decoded)",
        "JSONRPCRequest.model_validate(decoded)",
        'req.method == "subscriptions/listen" and not has_sse',
        "find_duplicated_routing_header(request.headers.items())",
        "classify_inbound_request(decoded, headers=dict(request.headers))",
        "_mcp_param_rejection(app, request, req, verdict, lifespan_state)",
        "Connection.from_envelope(", "verdict.protocol_version", "verdict.client_info",
        "verdict.client_capabilities", "_SingleExchangeDispatchContext(",
        'TransportContext(kind="streamable-http", can_send_request=False, '
        'headers=request.headers)', "request_id=req.id",
        "ServerMessageMetadata(request_context=request)",
        "progress_token=progress_token_from_params(req.params)",
        "dctx.sink = send_ch", "serve_one(app, dctx, req.method, req.params, "
        "connection=connection, lifespan_state=lifespan_state)",
        '"headers": _SSE_HEADERS', 'b": ping\\r\\n\\r\\n"', "_sse_event(result[0])",
        '"more_body": False'), _hook(
        11, "handle_modern_request checks, dispatches or frames a request differently")
    from mcp.shared import inbound
    assert "if headers.get(MCP_METHOD_HEADER) != method:" in inspect.getsource(
        inbound.classify_inbound_request), _hook(
        11, "a modern request no longer needs an Mcp-Method header that matches its body")
    assert 'req.method != "tools/call"' in inspect.getsource(modern._mcp_param_rejection), _hook(
        11, "Mcp-Param validation applies to more than tools/call")
    assert ordered(inspect.getsource(modern._to_jsonrpc_response), "result = await coro",
                   "JSONRPCResponse(jsonrpc=\"2.0\", id=request_id, result=result)"), _hook(
        11, "the modern entry wraps a result differently")
    assert ordered(inspect.getsource(modern._SingleExchangeDispatchContext.notify),
                   "dict(params) if params is not None else None",
                   "self.sink.send(_sse_event(JSONRPCNotification(jsonrpc=\"2.0\", "
                   "method=method, params=body)))"), _hook(
        11, "the modern entry frames a notification differently")
    assert 'notification.model_dump(by_alias=True, mode="json", exclude_none=True)' in (
        inspect.getsource(ServerSession._notify)), _hook(
        11, "the server session dumps a notification differently")
    assert 'content_type.lower().startswith("application/json")' in inspect.getsource(
        TransportSecurityMiddleware._validate_content_type), _hook(
        11, "the SDK checks Content-Type differently")
    routing = inspect.getsource(StreamableHTTPSessionManager._handle_request)
    assert ordered(routing, "next(", "pv is not None and pv not in HANDSHAKE_PROTOCOL_VERSIONS",
                   "await handle_modern_request(", "self._lifespan_state"), _hook(
        11, "the manager routes requests to the modern entry differently")
    assert isinstance(modern._SSE_HEADERS, list) and callable(modern._sse_event), _hook(
        11, "_SSE_HEADERS or _sse_event is gone")
    manager = StreamableHTTPSessionManager(app=MCPServer("canary")._lowlevel_server)
    assert manager._task_group is None and manager._lifespan_state is None and (
        manager.max_request_body_size > 0), _hook(
        11, "the manager's _task_group, _lifespan_state or max_request_body_size is gone")

    for name in ("on_request", "on_notify"):
        attr = runner.ServerRunner.__dict__.get(name)
        assert isinstance(attr, (functools.cached_property, property)) and (
            inspect.iscoroutinefunction(getattr(runner.ServerRunner, f"_{name}", None))), _hook(
            12, f"ServerRunner.{name} is no longer a property over _{name}")
    assert "runner.on_request(dctx, method, params)" in inspect.getsource(runner.serve_one), _hook(
        12, "serve_one no longer reads the runner's on_request")


def _check_hook_9() -> None:
    serve_opening = getattr(StreamableHTTPSessionManager, "_serve_opening_request", None)
    assert serve_opening is not None and inspect.iscoroutinefunction(serve_opening) and (
        _parameters(serve_opening) == ["self", "http_transport", "scope", "receive", "send"]
    ), _hook(9, "async StreamableHTTPSessionManager._serve_opening_request(http_transport, "
                "scope, receive, send) is gone or re-signed")
    stateful = inspect.getsource(StreamableHTTPSessionManager._handle_stateful_request)
    assert "await self._serve_opening_request(http_transport, scope, receive, send)" in (
        stateful), _hook(9, "the manager no longer opens a session via _serve_opening_request")
    # What our copy of the SDK's session recipe does, the SDK's own still does.
    opening = inspect.getsource(serve_opening)
    assert "http_transport.connect()" in opening and "serve_loop(" in opening and (
        "idle_scope" in opening), _hook(9, "the SDK runs a session differently")
    serve_loop_source = inspect.getsource(runner.serve_loop)
    assert 'inline_methods=frozenset({"initialize"})' in serve_loop_source and (
        "Connection.for_loop(dispatcher, session_id=session_id)" in serve_loop_source) and (
        "await serve_connection(" in serve_loop_source), _hook(
        9, "serve_loop builds its dispatcher and connection differently")
    transport = StreamableHTTPServerTransport(mcp_session_id="canary", idle_timeout=5)
    assert transport._requests_in_flight == 0 and hasattr(transport, "idle_scope"), _hook(
        9, "the transport no longer counts requests in flight (_requests_in_flight) or "
           "has an idle_scope")
    get_source = inspect.getsource(StreamableHTTPServerTransport._handle_get_request)
    assert "writer = self._read_stream_writer" in get_source and (
        "self._request_streams" in get_source), _hook(
        9, "the transport's GET handling uses more of the session than its read stream's "
           "presence")
    connect_source = inspect.getsource(StreamableHTTPServerTransport.connect)
    assert "self._read_stream_writer = read_stream_writer" in connect_source and (
        "self.idle_scope = anyio.CancelScope()" in connect_source), _hook(
        9, "transport.connect() no longer makes fresh streams and idle scope each time")
    connection = Connection.for_loop(None, session_id="canary")  # type: ignore[arg-type]
    params = types.InitializeRequestParams(
        protocol_version="2025-06-18", capabilities=types.ClientCapabilities(),
        client_info=types.Implementation(name="canary", version="0"))
    connection.client_params = params
    assert connection.initialize_accepted and connection.client_capabilities is not None, _hook(
        9, "a Connection given client_params is not initialized")


async def test_a_real_session_passes_through_every_hook(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drive a legacy session through the real manager: it must be admitted (2), get its
    own store (5), have its GET stream served from the store (6), be listed and ended by
    us (4), and pass through the discard hook when it ends (3)."""
    calls: list[str] = []
    seen = anyio.Event()

    def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def record() -> None:
            calls.append(name)
            seen.set()

        if inspect.iscoroutinefunction(original):
            async def async_spy(*args: Any, **kwargs: Any) -> Any:
                record()
                return await original(*args, **kwargs)
            return async_spy

        def sync_spy(*args: Any, **kwargs: Any) -> Any:
            record()
            return original(*args, **kwargs)
        return sync_spy

    for name in ("_admit_session", "_discard_session"):
        monkeypatch.setattr(sdk_hooks.SessionManager, name,
                            spy(name, getattr(sdk_hooks.SessionManager, name)))
    replayed: list[str] = []
    original_start = SessionEventStore.get_stream_start

    def start(self: SessionEventStore, last_event_id: str) -> int | None:
        replayed.append(last_event_id)
        seen.set()
        return original_start(self, last_event_id)

    monkeypatch.setattr(SessionEventStore, "get_stream_start", start)

    async def wait_until(done: Callable[[], bool], message: str) -> None:
        nonlocal seen
        try:
            with anyio.fail_after(10):
                while not done():
                    seen = anyio.Event()
                    await seen.wait()
        except TimeoutError:
            pytest.fail(message)

    await server.project()
    key = await server.agent_key()
    manager = server.runtime.mcp.manager
    async with mcp_client(server, key, "legacy") as client:
        await propose_issue(client)  # the session is open and serving
        assert calls.count("_admit_session") == 1, _hook(
            2, "the manager no longer calls _admit_session when a session opens")
        [session_id] = manager.session_ids()
        # Renamed to carry the instance's routing tag, owner and all (or the SDK would
        # answer the session's next request 404, and propose_issue would have failed).
        assert session_id == server.settings.tagged(session_id.split(".", 1)[1])
        assert session_id in manager._session_owners, _hook(
            4, "the session's owner is not kept in _session_owners under its id")
        transport = manager._server_instances[session_id]
        assert isinstance(sdk_hooks.session_event_store(transport), SessionEventStore), _hook(
            5, "a session's transport was not built with the store _admit_session set")
        assert isinstance(transport, sdk_hooks.LeanGetTransport), _hook(
            8, "a session's transport did not become a LeanGetTransport")
        await wait_until(lambda: GET_STREAM_RESUME in replayed, _hook(
            6, "a GET with our Last-Event-ID is no longer handed to _replay_events (hook 8)"))
        await manager.terminate(session_id)
        await wait_until(lambda: "_discard_session" in calls, _hook(
            3, "ending a session no longer passes through _discard_session"))
        assert manager.session_ids() == [], _hook(
            4, "a terminated session stays in _server_instances")
