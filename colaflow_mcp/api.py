"""REST for reviewers (decide) and agents (propose, poll): JSON, camelCase, tenant-scoped."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from colaflow_mcp.auth import KEY_PREFIX, Principal, bearer
from colaflow_mcp.changes import Conflict, Forbidden, NotFound
from colaflow_mcp.events import change_to_json
from colaflow_mcp.services import Services
from colaflow_mcp.workspace import InvalidArguments

logger = logging.getLogger(__name__)

Handler = Callable[[Request, Principal, Services], Awaitable[Response]]


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The one error shape: ``{"error": code, "message": text, …}``."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def services_of(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def principal_of(request: Request, svc: Services) -> Principal | None:
    """``Authorization: Bearer`` (API key or reviewer JWT), else ``X-API-Key`` (API keys only)."""
    credential = bearer(request.headers.get("authorization"))
    if credential:
        return await svc.auth.authenticate(credential)
    key = (request.headers.get("x-api-key") or "").strip()
    if not key.startswith(KEY_PREFIX):  # a reviewer token is not an API key
        return None
    return await svc.auth.keys.verify(key)


class PayloadTooLarge(Exception):
    """The request body is over ``max_body_bytes``."""


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run, and map domain errors to status codes."""

    async def run(request: Request) -> Response:
        svc = services_of(request)
        principal = await principal_of(request, svc)
        if principal is None:
            return error(401, "unauthorized",
                         "missing or invalid credentials: send 'Authorization: Bearer <API key "
                         "or reviewer token>' or 'X-API-Key: <API key>'")
        try:
            return await handler(request, principal, svc)
        except InvalidArguments as exc:
            return error(400, "invalid_request", str(exc))
        except PayloadTooLarge as exc:
            return error(413, "payload_too_large", str(exc))
        except Forbidden as exc:
            return error(403, "forbidden", str(exc))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except Conflict as exc:
            return error(409, "conflict", str(exc), currentStatus=exc.status)

    return run


async def json_body(request: Request, svc: Services) -> dict[str, Any]:
    """The request body as a JSON object, within the size limit."""
    limit = svc.settings.max_body_bytes
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
async def list_changes(request: Request, p: Principal, svc: Services) -> Response:
    page = await svc.changes.list_changes(
        p, status=request.query_params.get("status") or None,
        page=_int_param(request, "page", 1), page_size=_int_param(request, "pageSize", 20),
    )
    return JSONResponse({
        "items": [change_to_json(c) for c in page.items], "total": page.total,
        "page": page.page, "pageSize": page.page_size,
    })


@endpoint
async def propose(request: Request, p: Principal, svc: Services) -> Response:
    body = await json_body(request, svc)
    tool = body.get("tool") or body.get("toolName")
    if not isinstance(tool, str):
        raise InvalidArguments("'tool' is required, e.g. \"create_issue\"")
    arguments = body.get("arguments", {})
    expires = body.get("expiresInSeconds")
    change = await svc.changes.propose(p, tool, arguments, expires)
    return JSONResponse(change_to_json(change), status_code=201)


@endpoint
async def get_change(request: Request, p: Principal, svc: Services) -> Response:
    change = await svc.changes.get(p, request.path_params["id"])
    return JSONResponse(change_to_json(change))


@endpoint
async def approve(request: Request, p: Principal, svc: Services) -> Response:
    change = await svc.changes.approve(p, request.path_params["id"])
    return JSONResponse(change_to_json(change))


@endpoint
async def reject(request: Request, p: Principal, svc: Services) -> Response:
    if p.kind != "reviewer":
        raise Forbidden("only reviewers reject changes")
    body = await json_body(request, svc)
    change = await svc.changes.reject(p, request.path_params["id"], body.get("reason"))
    return JSONResponse(change_to_json(change))


@endpoint
async def list_projects(request: Request, p: Principal, svc: Services) -> Response:
    return JSONResponse({"items": await svc.changes.list_projects(p)})


@endpoint
async def get_issue(request: Request, p: Principal, svc: Services) -> Response:
    return JSONResponse(await svc.changes.get_issue(p, request.path_params["key"]))


async def health(request: Request) -> Response:
    svc = services_of(request)
    db_ok = await svc.db.ping()
    bus = svc.bus.status()
    loops = dict(svc.loops_alive)
    ok = db_ok and svc.bus.healthy and all(loops.values())
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "database": "ok" if db_ok else "unreachable",
        "backplane": bus,
        "loops": loops,
        "loopPasses": dict(svc.loop_passes),
        "instance": svc.settings.instance_id,
        "subscribers": svc.notifier.subscriber_count(),
    }
    for name in ("hub", "mcp"):
        component = getattr(request.app.state, name, None)
        if component is not None:
            body[name] = component.status()
    return JSONResponse(body, status_code=200 if db_ok else 503)


def routes() -> list[BaseRoute]:
    base = "/api/mcp/pending-changes"
    return [
        Route("/health", health, methods=["GET"]),
        Route(base, list_changes, methods=["GET"]),
        Route(base, propose, methods=["POST"]),
        Route(base + "/{id}", get_change, methods=["GET"]),
        Route(base + "/{id}/approve", approve, methods=["POST"]),
        Route(base + "/{id}/reject", reject, methods=["POST"]),
        Route("/api/projects", list_projects, methods=["GET"]),
        Route("/api/issues/{key}", get_issue, methods=["GET"]),
    ]
