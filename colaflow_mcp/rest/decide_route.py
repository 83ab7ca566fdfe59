"""``POST /api/mcp/pending-changes/{id}/approve|reject`` answered ahead of Starlette's router.

A served approval's own work is small, so the request machinery around it shows: the
router's match over every route, ``Request``, the exception wrapper, ``JSONResponse``
(benchmarks/RESULTS.md, approve-raw). This layer answers the two decision routes from the
ASGI scope directly and hands every other request on unchanged.

Same answers as the routes in :mod:`colaflow_mcp.rest.routes` (which stay: they describe
the routes in ``/openapi.json`` and serve them when this layer steps aside): the same
credential check, the same order of checks (credentials, role, body, decision), the same
status codes and JSON bodies, the same body-size limit and the same response bytes and
headers. tests/core/test_decide_route.py compares the two answer for answer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from colaflow_mcp import logs
from colaflow_mcp.domain.auth import Principal, credential_from
from colaflow_mcp.domain.errors import Conflict, Forbidden, InvalidArguments, NotFound
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.http import BadBody, BodyTooLarge, json_object
from colaflow_mcp.rest.routes import (
    PENDING_CHANGES,
    RETRY_AFTER,
    UNAUTHORIZED,
    UNAVAILABLE,
    RestApi,
)
from colaflow_mcp.rest.schemas import ApproveRequest, RejectRequest, invalid
from colaflow_mcp.store.engine import unavailable

# Starlette's ``{id}`` matches one path segment of the decoded path.
_DECISION = re.compile(re.escape(PENDING_CHANGES) + r"/([^/]+)/(approve|reject)")


logger = logging.getLogger(__name__)


class DecideRoute:
    """ASGI layer: the decision routes answered here, everything else passed to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get(
                "root_path"):
            match = _DECISION.fullmatch(scope["path"])
            if match is not None:
                return _decide(scope, receive, send, match[1], match[2])
        other: Awaitable[None] = self.app(scope, receive, send)
        return other


async def _decide(scope: Any, receive: Any, send: Any, change_id: str, verb: str) -> None:
    api: RestApi = scope["app"].state.rest
    headers = _headers(scope["headers"])
    extra: list[tuple[bytes, bytes]] = []
    try:
        principal = await api.auth.authenticate(credential_from(headers))
        if principal is None:
            status, content = 401, {"error": "unauthorized", "message": UNAUTHORIZED}
        else:
            logs.bind(tenant=principal.tenant_slug, change_id=change_id)
            status, content = await _answer(api, principal, headers, receive, change_id,
                                            verb)
    except Exception as exc:  # as routes.endpoint: 503 while the database does not answer
        if not unavailable(exc):
            raise
        logger.debug("%s %s: database unavailable (%s)", verb, change_id, type(exc).__name__)
        status, content = 503, {"error": "unavailable", "message": UNAVAILABLE}
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                 for k, v in RETRY_AFTER.items()]
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode("latin-1")),
                            (b"content-type", b"application/json"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _answer(api: RestApi, principal: Principal, headers: dict[str, str], receive: Any,
                  change_id: str, verb: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body, as ``routes.endpoint`` maps the domain's errors."""
    try:
        if principal.kind != "reviewer":
            raise Forbidden(f"only reviewers {verb} changes")
        data = await _body(headers, receive, api.settings.max_body_bytes)
        if verb == "approve":
            arguments = _validated(ApproveRequest, data).arguments
            change = await api.changes.approve(principal, change_id, arguments)
        else:
            reason = _validated(RejectRequest, data).reason
            change = await api.changes.reject(principal, change_id, reason)
        return 200, change_to_json(change)
    except (InvalidArguments, BadBody) as exc:
        return 400, {"error": "invalid_request", "message": str(exc)}
    except BodyTooLarge as exc:
        return 413, {"error": "payload_too_large", "message": str(exc)}
    except Forbidden as exc:
        return 403, {"error": "forbidden", "message": str(exc)}
    except NotFound as exc:
        return 404, {"error": "not_found", "message": str(exc)}
    except Conflict as exc:
        return 409, {"error": "conflict", "message": str(exc), "currentStatus": exc.status}


def _validated(model: type[ApproveRequest] | type[RejectRequest], data: dict[str, Any]
               ) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


async def _body(headers: dict[str, str], receive: Any, limit: int) -> dict[str, Any]:
    """``http.json_body`` on the ASGI messages: the declared length checked first, then
    what arrives, stopping at the limit."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body too large (limit {limit} bytes)")
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body += message.get("body", b"")
            if len(body) > limit:
                raise BodyTooLarge(f"body too large (limit {limit} bytes)")
            if not message.get("more_body", False):
                return json_object(body)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


_READ = (b"authorization", b"x-api-key", b"content-length")


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers read here, as Starlette's ``Headers.get`` reads them: the first
    of each name, latin-1."""
    found: dict[str, str] = {}
    for k, v in raw:
        if k in _READ:
            found.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    return found
