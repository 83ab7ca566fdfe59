"""The console's JSON calls (session cookie; CSRF header on every state change): the same
domain operations as the REST reviewer routes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from colaflow_mcp.domain.console import Session
from colaflow_mcp.domain.errors import Conflict, Forbidden, InvalidArguments, NotFound
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.http import BadBody, BodyTooLarge, json_body, json_error
from colaflow_mcp.web.console import Console, json_endpoint
from colaflow_mcp.web.live import EventStream
from colaflow_mcp.web.views import field_errors


def conflict_message(status: str) -> str:
    """A 409 in words."""
    return (f"Nothing was done: this change is already {status}, decided elsewhere (another "
            "reviewer, the CLI, or its expiry) while you had it open.")


def _guarded(handler: Any) -> Any:
    """Domain errors as JSON answers (409 in words)."""

    async def run(request: Request, session: Session, console: Console) -> Response:
        try:
            response: Response = await handler(request, session, console)
            return response
        except (InvalidArguments, BadBody) as exc:
            return json_error(400, "invalid_request", str(exc))
        except BodyTooLarge as exc:
            return json_error(413, "payload_too_large", str(exc))
        except Forbidden as exc:
            return json_error(403, "forbidden", str(exc))
        except NotFound as exc:
            return json_error(404, "not_found", str(exc))
        except Conflict as exc:
            return json_error(409, "conflict", conflict_message(exc.status),
                              currentStatus=exc.status)

    return run


@_guarded
async def list_changes(request: Request, session: Session, console: Console) -> Response:
    """``GET /inbox/api/changes?status=&page=&pageSize=``"""
    q = request.query_params
    try:
        page, size = int(q.get("page") or 1), int(q.get("pageSize") or 20)
    except ValueError:
        raise InvalidArguments("page and pageSize must be integers") from None
    found = await console.queries.list_changes(session.principal, q.get("status") or None,
                                               page, size)
    return JSONResponse(found.to_json())


@_guarded
async def get_change(request: Request, session: Session, console: Console) -> Response:
    """``GET /inbox/api/changes/{id}``"""
    change = await console.queries.get_change(session.principal, request.path_params["id"])
    return JSONResponse(change_to_json(change))


@_guarded
async def approve(request: Request, session: Session, console: Console) -> Response:
    """``POST /inbox/api/changes/{id}/approve`` ``{arguments?}``: an edit's bad fields come
    back one by one (``fields``), and nothing is approved."""
    body = await json_body(request, console.settings.max_body_bytes)
    arguments = body.get("arguments")
    if arguments is not None:
        change = await console.queries.get_change(session.principal, request.path_params["id"])
        errors = field_errors(change.tool_name, arguments)
        if errors:
            return json_error(400, "invalid_request", "Fix the highlighted fields; nothing "
                              "was approved.", fields=errors)
    change = await console.changes.approve(session.principal, request.path_params["id"],
                                           arguments)
    return JSONResponse(change_to_json(change))


@_guarded
async def reject(request: Request, session: Session, console: Console) -> Response:
    """``POST /inbox/api/changes/{id}/reject`` ``{reason}``"""
    body = await json_body(request, console.settings.max_body_bytes)
    change = await console.changes.reject(session.principal, request.path_params["id"],
                                          body.get("reason"))
    return JSONResponse(change_to_json(change))


@_guarded
async def audit(request: Request, session: Session, console: Console) -> Response:
    """``GET /inbox/api/audit?changeId=&after=&limit=``"""
    q = request.query_params
    return JSONResponse(await console.audit.page(session.principal, q.get("changeId"),
                                                 q.get("after"), q.get("limit")))


async def who(request: Request, session: Session, console: Console) -> Response:
    """``GET /inbox/api/session``: who is signed in (the page checks after a drop)."""
    p = session.principal
    return JSONResponse({"user": p.user, "tenant": p.tenant_slug})


async def events(request: Request, session: Session, console: Console) -> Response:
    """``GET /inbox/api/events``: the live queue (Server-Sent Events)."""
    return EventStream(console, session, request)  # type: ignore[return-value]


ROUTES = [
    ("/api/changes", json_endpoint(list_changes), "GET"),
    ("/api/changes/{id}", json_endpoint(get_change), "GET"),
    ("/api/changes/{id}/approve", json_endpoint(approve, changes_state=True), "POST"),
    ("/api/changes/{id}/reject", json_endpoint(reject, changes_state=True), "POST"),
    ("/api/audit", json_endpoint(audit), "GET"),
    ("/api/session", json_endpoint(who), "GET"),
    ("/api/events", json_endpoint(events), "GET"),
]
