"""The console's pages: sign in by link, the inbox (queue and one change), history, log out."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from colaflow_mcp.domain.console import LinkRefused, Session
from colaflow_mcp.domain.errors import InvalidArguments, NotFound
from colaflow_mcp.domain.queries import MAX_PAGE
from colaflow_mcp.domain.representation import change_to_json
from colaflow_mcp.web.console import PREFIX, console_of, session_of, templates_of
from colaflow_mcp.web.security import (
    COOKIE,
    CSRF_FIELD,
    clear_session_cookie,
    csrf_ok,
    set_session_cookie,
)
from colaflow_mcp.web.views import diff_rows, edit_fields

QUEUE_PAGE = 100  # the queue as first rendered; the live stream then holds up to 500


def _page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return templates_of(request).TemplateResponse(
        request, name, {"prefix": PREFIX, **context}, status_code=status)


def _signed_out(request: Request) -> Response:
    return _page(request, "message.html", 401, title="Sign in",
                 message="You are not signed in, or your session ended.",
                 hint="Ask an operator for a sign-in link: colaflow-mcp login-link "
                      "--tenant T --user YOU")


async def login(request: Request) -> Response:
    """``GET /inbox/login?token=…``: consume the link, start a session, land on /inbox."""
    console = console_of(request)
    if request.method != "GET":  # a HEAD (link previews, scanners) must not use the link up
        return Response(status_code=200, media_type="text/html")
    try:
        opened = await console.auth.open_link(request.query_params.get("token") or "")
    except LinkRefused:
        return _page(request, "message.html", 403, title="Link not valid",
                     message="This sign-in link has already been used or has expired. "
                             "Each link works once, for a few minutes.",
                     hint="Ask for a new one: colaflow-mcp login-link --tenant T --user YOU")
    response = RedirectResponse(PREFIX, status_code=303)
    set_session_cookie(response, request, opened.cookie,
                       int(console.settings.console_session_ttl_seconds))
    return response


async def logout(request: Request) -> Response:
    """``POST /inbox/logout`` (form with the CSRF token): end the session server-side."""
    session = await session_of(request)
    if session is None:
        return _signed_out(request)
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not csrf_ok(session.csrf_token, presented if isinstance(presented, str) else None):
        return _page(request, "message.html", 403, title="Not logged out",
                     message="The form was missing its security token.",
                     hint="Reload the page and press Log out again.")
    await console_of(request).auth.end(request.cookies.get(COOKIE) or "")
    response = _page(request, "message.html", 200, title="Logged out",
                     message="You are logged out; this browser's session has ended.",
                     hint="Sign in again with a new link from colaflow-mcp login-link.")
    clear_session_cookie(response, request)
    return response


async def _queue(request: Request, session: Session) -> list[dict[str, Any]]:
    page = await console_of(request).queries.list_changes(
        session.principal, "Pending", 1, QUEUE_PAGE)
    return [change_to_json(c) for c in page.items]


async def inbox(request: Request) -> Response:
    """``GET /inbox``: the live queue."""
    session = await session_of(request)
    if session is None:
        return _signed_out(request)
    return _page(request, "inbox.html", session=session, queue=await _queue(request, session),
                 change=None)


async def change_page(request: Request) -> Response:
    """``GET /inbox/changes/{id}``: the queue and one change (diff, actions, audit)."""
    session = await session_of(request)
    if session is None:
        return _signed_out(request)
    console = console_of(request)
    try:
        row = await console.queries.get_change(session.principal, request.path_params["id"])
    except (NotFound, InvalidArguments):
        return _page(request, "message.html", 404, session=session, title="Not found",
                     message="There is no such change in your tenant.", hint="")
    change = change_to_json(row)
    trail = await console.audit.page(session.principal, row.id, None, 200)
    return _page(request, "inbox.html", session=session, queue=await _queue(request, session),
                 change=change, rows=diff_rows(change),
                 fields=edit_fields(row.tool_name, change["arguments"] or {}),
                 audit=trail["entries"])


async def history(request: Request) -> Response:
    """``GET /inbox/history?page=``: decided changes, latest first."""
    session = await session_of(request)
    if session is None:
        return _signed_out(request)
    try:  # a page number typed by hand: the nearest page there can be, never a 500
        number = min(max(1, int(request.query_params.get("page") or 1)), MAX_PAGE)
    except ValueError:
        number = 1
    page = await console_of(request).queries.list_decided(session.principal, number, 25)
    return _page(request, "history.html", session=session,
                 items=[change_to_json(c) for c in page.items], page=page.page,
                 more=page.page * page.page_size < page.total)


ROUTES = [
    ("/", inbox, "GET"),
    ("/login", login, "GET"),
    ("/logout", logout, "POST"),
    ("/changes/{id}", change_page, "GET"),
    ("/history", history, "GET"),
]
