"""REST for reviewers (decide) and agents (propose, poll): JSON, camelCase, tenant-scoped."""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from colaflow_mcp.config import Settings
from colaflow_mcp.domain.audit import AuditLog
from colaflow_mcp.domain.auth import Authenticator, Principal, credential_from
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.errors import Conflict, Forbidden, InvalidArguments, NotFound
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.http import json_error
from colaflow_mcp.rest.health import health

logger = logging.getLogger(__name__)

PENDING_CHANGES = "/api/mcp/pending-changes"


@dataclass(frozen=True)
class RestApi:
    """What the REST handlers use; the runtime puts one in ``app.state.rest``."""

    settings: Settings
    auth: Authenticator
    changes: ChangeService
    queries: Queries
    audit: AuditLog


Handler = Callable[[Request, Principal, RestApi], Awaitable[Response]]


class PayloadTooLarge(Exception):
    """The request body is over ``max_body_bytes``."""


def api_of(request: Request) -> RestApi:
    """The app's REST dependencies."""
    api: RestApi = request.app.state.rest
    return api


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run, and map domain errors to status codes."""

    async def run(request: Request) -> Response:
        api = api_of(request)
        principal = await api.auth.authenticate(credential_from(request.headers))
        if principal is None:
            return json_error(401, "unauthorized",
                              "missing or invalid credentials: send 'Authorization: Bearer "
                              "<API key or reviewer token>' or 'X-API-Key: <API key>'")
        try:
            return await handler(request, principal, api)
        except InvalidArguments as exc:
            return json_error(400, "invalid_request", str(exc))
        except PayloadTooLarge as exc:
            return json_error(413, "payload_too_large", str(exc))
        except Forbidden as exc:
            return json_error(403, "forbidden", str(exc))
        except NotFound as exc:
            return json_error(404, "not_found", str(exc))
        except Conflict as exc:
            return json_error(409, "conflict", str(exc), currentStatus=exc.status)

    return run


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, within the size limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body too large (limit {limit} bytes)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body too large (limit {limit} bytes)")
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_not_json)
    except InvalidArguments:
        raise
    except RecursionError:
        raise InvalidArguments("body is nested too deeply to be read as JSON") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidArguments("body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidArguments("body must be a JSON object")
    return data


def _not_json(constant: str) -> Any:
    # Python's json module reads NaN and Infinity; JSON has neither.
    raise InvalidArguments(f"body must be JSON: {constant} is not a JSON value")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArguments(f"{name} must be an integer") from None


@endpoint
async def list_changes(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/mcp/pending-changes?status=&page=&pageSize=``"""
    page = await api.queries.list_changes(
        p, status=request.query_params.get("status") or None,
        page=_int_param(request, "page", 1), page_size=_int_param(request, "pageSize", 20),
    )
    return JSONResponse(page.to_json())


@endpoint
async def propose(request: Request, p: Principal, api: RestApi) -> Response:
    """``POST /api/mcp/pending-changes`` ``{tool, arguments, expiresInSeconds?, rationale?}``
    (agents)."""
    body = await json_body(request, api.settings.max_body_bytes)
    tool = body.get("tool") or body.get("toolName")
    if not isinstance(tool, str):
        raise InvalidArguments("'tool' is required, e.g. \"create_issue\"")
    arguments = body.get("arguments", {})
    expires = body.get("expiresInSeconds")
    change = await api.changes.propose(p, tool, arguments, expires, body.get("rationale"))
    return JSONResponse(change_to_json(change), status_code=201)


@endpoint
async def get_change(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/mcp/pending-changes/{id}``: the polling fallback."""
    change = await api.queries.get_change(p, request.path_params["id"])
    return JSONResponse(change_to_json(change))


@endpoint
async def approve(request: Request, p: Principal, api: RestApi) -> Response:
    """``POST /api/mcp/pending-changes/{id}/approve`` ``{arguments?}`` (reviewers): decide
    and execute, with the reviewer's complete arguments instead of the agent's if given."""
    if p.kind != "reviewer":
        raise Forbidden("only reviewers approve changes")
    body = await json_body(request, api.settings.max_body_bytes)
    # Other fields are ignored, as before edits existed; but a misspelt "arguments" must
    # not approve the unedited change.
    misspelt = sorted(k for k in body if k != "arguments" and difflib.get_close_matches(
        k.lower(), ["arguments"], n=1, cutoff=0.6))
    if misspelt:
        raise InvalidArguments(f"unknown field {misspelt[0]!r}: did you mean \"arguments\" "
                               "(complete arguments for the tool)? Nothing was approved")
    change = await api.changes.approve(p, request.path_params["id"], body.get("arguments"))
    return JSONResponse(change_to_json(change))


@endpoint
async def reject(request: Request, p: Principal, api: RestApi) -> Response:
    """``POST /api/mcp/pending-changes/{id}/reject`` ``{reason}`` (reviewers)."""
    if p.kind != "reviewer":
        raise Forbidden("only reviewers reject changes")
    body = await json_body(request, api.settings.max_body_bytes)
    change = await api.changes.reject(p, request.path_params["id"], body.get("reason"))
    return JSONResponse(change_to_json(change))


@endpoint
async def audit_entries(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/audit?changeId=&after=&limit=`` (reviewers): the tenant's audit trail."""
    q = request.query_params
    return JSONResponse(await api.audit.page(p, q.get("changeId"), q.get("after"),
                                             q.get("limit")))


@endpoint
async def list_projects(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/projects``"""
    return JSONResponse({"items": await api.queries.list_projects(p)})


@endpoint
async def get_issue(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/issues/{key}``"""
    return JSONResponse(await api.queries.get_issue(p, request.path_params["key"]))


def routes() -> list[BaseRoute]:
    """Every REST route (handlers find their dependencies in ``app.state.rest``)."""
    return [
        Route("/health", health, methods=["GET"]),
        Route(PENDING_CHANGES, list_changes, methods=["GET"]),
        Route(PENDING_CHANGES, propose, methods=["POST"]),
        Route(PENDING_CHANGES + "/{id}", get_change, methods=["GET"]),
        Route(PENDING_CHANGES + "/{id}/approve", approve, methods=["POST"]),
        Route(PENDING_CHANGES + "/{id}/reject", reject, methods=["POST"]),
        Route("/api/audit", audit_entries, methods=["GET"]),
        Route("/api/projects", list_projects, methods=["GET"]),
        Route("/api/issues/{key}", get_issue, methods=["GET"]),
    ]
