"""REST for reviewers (decide) and agents (propose, poll): JSON, camelCase, tenant-scoped."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from colaflow_mcp import logs
from colaflow_mcp.config import Settings
from colaflow_mcp.domain.audit import AuditLog
from colaflow_mcp.domain.auth import Authenticator, Principal, credential_from
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.errors import Conflict, Forbidden, InvalidArguments, NotFound
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.http import BadBody, BodyTooLarge, json_body, json_error
from colaflow_mcp.rest import openapi, ops
from colaflow_mcp.rest.openapi import Endpoint
from colaflow_mcp.rest.schemas import (
    ApproveRequest,
    AuditPage,
    AuditQuery,
    Change,
    ChangePage,
    Issue,
    ListChangesQuery,
    ProjectList,
    ProposeRequest,
    RejectRequest,
    invalid,
)
from colaflow_mcp.store.engine import unavailable

logger = logging.getLogger(__name__)

PENDING_CHANGES = "/api/mcp/pending-changes"
UNAUTHORIZED = ("missing or invalid credentials: send 'Authorization: Bearer <API key or "
                "reviewer token>' or 'X-API-Key: <API key>'")
# While the database does not answer (readiness says so too: docs/operations.md).
UNAVAILABLE = "the database does not answer; try again shortly"
RETRY_AFTER = {"Retry-After": "1"}
Q = TypeVar("Q", bound=BaseModel)
B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class RestApi:
    """What the REST handlers use; the runtime puts one in ``app.state.rest``."""

    settings: Settings
    auth: Authenticator
    changes: ChangeService
    queries: Queries
    audit: AuditLog


Handler = Callable[[Request, Principal, RestApi], Awaitable[Response]]


def api_of(request: Request) -> RestApi:
    """The app's REST dependencies."""
    api: RestApi = request.app.state.rest
    return api


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run, and map domain errors to status codes."""

    async def run(request: Request) -> Response:
        try:
            return await guarded(request)
        except Exception as exc:
            if not unavailable(exc):
                raise
            logger.debug("%s %s: database unavailable (%s)", request.method,
                         request.url.path, type(exc).__name__)
            return json_error(503, "unavailable", UNAVAILABLE, headers=RETRY_AFTER)

    async def guarded(request: Request) -> Response:
        api = api_of(request)
        principal = await api.auth.authenticate(credential_from(request.headers))
        if principal is None:
            return json_error(401, "unauthorized", UNAUTHORIZED)
        logs.bind(tenant=principal.tenant_slug, change_id=request.path_params.get("id"))
        try:
            return await handler(request, principal, api)
        except InvalidArguments as exc:
            return json_error(400, "invalid_request", str(exc))
        except BadBody as exc:
            return json_error(400, "invalid_request", str(exc))
        except BodyTooLarge as exc:
            return json_error(413, "payload_too_large", str(exc))
        except Forbidden as exc:
            return json_error(403, "forbidden", str(exc))
        except NotFound as exc:
            return json_error(404, "not_found", str(exc))
        except Conflict as exc:
            return json_error(409, "conflict", str(exc), currentStatus=exc.status)

    return run


def _query(request: Request, model: type[Q]) -> Q:
    """The query string validated by ``model`` (an empty value counts as absent)."""
    params = {k: v for k, v in request.query_params.items() if v != ""}
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise invalid(exc) from None


async def _body(request: Request, api: RestApi, model: type[B]) -> B:
    """The JSON body validated by ``model``."""
    data = await json_body(request, api.settings.max_body_bytes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


@endpoint
async def list_changes(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/mcp/pending-changes?status=&page=&pageSize=``"""
    q = _query(request, ListChangesQuery)
    page = await api.queries.list_changes(
        p, status=q.status.value if q.status else None, page=q.page, page_size=q.pageSize)
    return JSONResponse(page.to_json())


@endpoint
async def propose(request: Request, p: Principal, api: RestApi) -> Response:
    """``POST /api/mcp/pending-changes`` ``{tool, arguments, expiresInSeconds?, rationale?}``
    (agents)."""
    body = await _body(request, api, ProposeRequest)
    change = await api.changes.propose(p, body.tool, body.arguments, body.expiresInSeconds,
                                       body.rationale)
    logs.bind(change_id=change.id)
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
    body = await _body(request, api, ApproveRequest)
    change = await api.changes.approve(p, request.path_params["id"], body.arguments)
    return JSONResponse(change_to_json(change))


@endpoint
async def reject(request: Request, p: Principal, api: RestApi) -> Response:
    """``POST /api/mcp/pending-changes/{id}/reject`` ``{reason}`` (reviewers)."""
    if p.kind != "reviewer":
        raise Forbidden("only reviewers reject changes")
    body = await _body(request, api, RejectRequest)
    change = await api.changes.reject(p, request.path_params["id"], body.reason)
    return JSONResponse(change_to_json(change))


@endpoint
async def audit_entries(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/audit?changeId=&after=&limit=`` (reviewers): the tenant's audit trail."""
    if p.kind != "reviewer":
        raise Forbidden("only reviewers read the audit trail")
    q = _query(request, AuditQuery)
    return JSONResponse(await api.audit.page(p, q.changeId, q.after, q.limit))


@endpoint
async def list_projects(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/projects``"""
    return JSONResponse({"items": await api.queries.list_projects(p)})


@endpoint
async def get_issue(request: Request, p: Principal, api: RestApi) -> Response:
    """``GET /api/issues/{key}``"""
    return JSONResponse(await api.queries.get_issue(p, request.path_params["key"]))


# Every REST route, with what /openapi.json says of it (rest/openapi.py). ``auth``: who
# may call (``None``: anyone); ``errors``: the error statuses it may answer (503 for each:
# the database does not answer, ``endpoint`` and ``DecideRoute``).
AGENT_OR_REVIEWER = ("agent", "reviewer")
ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", PENDING_CHANGES, list_changes, "List the tenant's pending changes",
             query=ListChangesQuery, response=ChangePage, auth=AGENT_OR_REVIEWER,
             errors=(400, 401, 503)),
    Endpoint("POST", PENDING_CHANGES, propose, "Propose a change (as an MCP tool would)",
             body=ProposeRequest, response=Change, status=201, auth=("agent",),
             errors=(400, 401, 403, 404, 413, 503)),
    Endpoint("GET", PENDING_CHANGES + "/{id}", get_change,
             "One pending change: the polling fallback", response=Change,
             auth=AGENT_OR_REVIEWER, errors=(400, 401, 404, 503)),
    Endpoint("POST", PENDING_CHANGES + "/{id}/approve", approve,
             "Approve (optionally with edited arguments) and execute", body=ApproveRequest,
             response=Change, auth=("reviewer",), errors=(400, 401, 403, 404, 409, 413, 503)),
    Endpoint("POST", PENDING_CHANGES + "/{id}/reject", reject, "Reject with a reason",
             body=RejectRequest, response=Change, auth=("reviewer",),
             errors=(400, 401, 403, 404, 409, 413, 503)),
    Endpoint("GET", "/api/audit", audit_entries, "The tenant's audit trail",
             query=AuditQuery, response=AuditPage, auth=("reviewer",),
             errors=(400, 401, 403, 503)),
    Endpoint("GET", "/api/projects", list_projects, "The tenant's projects",
             response=ProjectList, auth=AGENT_OR_REVIEWER, errors=(401, 503)),
    Endpoint("GET", "/api/issues/{key}", get_issue, "An issue with its comments",
             response=Issue, auth=AGENT_OR_REVIEWER, errors=(400, 401, 404, 503)),
    *ops.ENDPOINTS,
]


def routes() -> list[BaseRoute]:
    """Every REST route (handlers find their dependencies in ``app.state.rest``), and
    ``/openapi.json``, which describes them."""
    document = openapi.document(ENDPOINTS)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    return [*(Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS),
            Route(openapi.PATH, openapi_json, methods=["GET"])]
