"""Hook 11 (see the package docstring): a modern ``subscriptions/listen`` request served
before the session manager.

``listen_request`` makes the checks the SDK's modern entry
(``_streamable_http_modern.handle_modern_request``, behind the manager's
``RequestBodyLimitMiddleware``) makes before it dispatches a request, with the SDK's own
functions, and says whether the request is a listen that passes them all; ``open_listen``
runs the SDK's own single-exchange pipeline for it (``serve_one``: the server's middleware,
the spec's params validation, our handler, the result's serialisation) with a dispatch
context whose sink collects the frames the handler sends, so the ack and the final result
are the SDK's bytes; ``encode_notification`` frames a later notification as the SDK's
dispatch context does. The SDK's per-request objects are all gone when ``open_listen``
returns: the held stream is ``listen_stream.DirectListen``'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from operator import attrgetter
from typing import Any

import mcp_types as types
from mcp.server import _streamable_http_modern as modern
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Receive, Scope

LISTEN = "subscriptions/listen"

# The head of the SDK's modern SSE responses (uvicorn adds its date and server).
SSE_HEADERS: list[tuple[bytes, bytes]] = list(modern._SSE_HEADERS)


def may_be_listen(headers: Headers) -> bool:
    """The manager routes this request to the 2026 entry (``_handle_request``: the first
    ``MCP-Protocol-Version`` header, not a handshake-era version), and its ``Mcp-Method``
    header names a listen (which ``classify_inbound_request`` requires of a listen it
    passes): any other request goes to the SDK without its body read here."""
    pv = headers.get(MCP_PROTOCOL_VERSION_HEADER)
    return (pv is not None and pv not in HANDSHAKE_PROTOCOL_VERSIONS
            and headers.get(MCP_METHOD_HEADER) == LISTEN)


async def read_body(scope: Scope, receive: Receive, limit: int
                    ) -> tuple[bytes | None, list[Message]]:
    """The request body as ``RequestBodyLimitMiddleware`` reads it (None if it would
    refuse it, or the client went), and the messages read, to replay to the SDK."""
    read: list[Message] = []
    declared = Headers(scope=scope).get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None, read
        except ValueError:
            pass
    body = bytearray()
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None, read
        body.extend(message.get("body", b""))
        if len(body) > limit:
            return None, read
        if not message.get("more_body", False):
            return bytes(body), read


class ListenRequest:
    """A ``subscriptions/listen`` request that passed every check of the SDK's modern
    entry before dispatch."""

    __slots__ = ("id", "params", "route", "headers")

    def __init__(self, request_id: types.RequestId, params: Mapping[str, Any] | None,
                 route: Any, headers: Headers) -> None:
        self.id = request_id
        self.params = params
        self.route = route  # the SDK's InboundModernRoute
        self.headers = headers


def listen_request(scope: Scope, headers: Headers, body: bytes) -> ListenRequest | None:
    """The request, if it is a listen the SDK's modern entry would dispatch; else None
    (the SDK answers it, refusals included)."""
    if scope["method"] != "POST":
        return None
    content_type = headers.get("content-type")  # TransportSecurityMiddleware, always
    if content_type is None or not content_type.lower().startswith("application/json"):
        return None
    has_json, has_sse = check_accept_headers(Request(scope))
    if not has_json or not has_sse:  # 406 (json_response or not: a listen needs SSE)
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or "id" not in decoded:
        return None
    try:
        req = types.JSONRPCRequest.model_validate(decoded)
    except ValidationError:
        return None
    if req.method != LISTEN:
        return None
    if find_duplicated_routing_header(headers.items()) is not None:
        return None
    route = classify_inbound_request(decoded, headers=dict(headers))
    if isinstance(route, InboundLadderRejection):
        return None
    return ListenRequest(req.id, req.params, route, headers)


class _Frames:
    """The dispatch context's sink: collects the frames a handler sends (as bytes)."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send(self, frame: bytes) -> None:
        self.frames.append(frame)


async def open_listen(manager: StreamableHTTPSessionManager, scope: Scope, receive: Receive,
                      listen: ListenRequest) -> tuple[list[bytes], bytes]:
    """Run the SDK's pipeline for the request as its modern entry does; the handler returns
    once it has acked. The frames it sent, and the frame of its result (the stream's last:
    the SDK's final event). Raises what the pipeline raises."""
    route = listen.route
    connection = Connection.from_envelope(route.protocol_version, route.client_info,
                                          route.client_capabilities)
    request = Request(scope, receive)
    sink = _Frames()
    dctx = modern._SingleExchangeDispatchContext(
        transport=TransportContext(kind="streamable-http", can_send_request=False,
                                   headers=request.headers),
        request_id=listen.id,
        message_metadata=ServerMessageMetadata(request_context=request),
        progress_token=progress_token_from_params(listen.params),
    )
    dctx.sink = sink  # type: ignore[assignment]
    result = await serve_one(manager.app, dctx, LISTEN, listen.params, connection=connection,
                             lifespan_state=manager._lifespan_state)
    final = modern._sse_event(types.JSONRPCResponse(jsonrpc="2.0", id=listen.id, result=result))
    return sink.frames, final


def runners_freed_by_refcount() -> None:
    """Hook 12: the SDK's ``ServerRunner.on_request`` and ``on_notify`` are
    ``cached_property``s, so the first read stores the runner's bound method on the runner:
    a reference cycle. Every modern request (``serve_one``: ``server/discover``, a tool
    call, a listen's prelude) then leaves its runner, ``Connection``, exit stack, events and
    parsed client params (~3 KiB) for the cyclic collector, which at serve's thresholds runs
    after tens of thousands of allocations: a burst of requests grows the heap by up to
    ~10 MiB, which whatever the burst left alive (held listeners) then keeps fragmented.
    Plain properties instead: a new bound method per read (the SDK reads each once per
    request, or once per session), no cycle. Process-wide, idempotent."""
    for name in ("on_request", "on_notify"):
        if isinstance(ServerRunner.__dict__.get(name), cached_property):
            setattr(ServerRunner, name, property(attrgetter(f"_{name}")))


def manager_running(manager: StreamableHTTPSessionManager) -> bool:
    """The manager serves requests (else the SDK raises, as before)."""
    return manager._task_group is not None


def encode_notification(notification: types.ServerNotification) -> bytes:
    """A request-scoped notification as the SDK frames it on a modern stream
    (``ServerSession._notify`` → ``_SingleExchangeDispatchContext.notify``)."""
    data = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
    params = data.get("params")
    return modern._sse_event(types.JSONRPCNotification(
        jsonrpc="2.0", method=data["method"], params=dict(params) if params is not None else None))
