"""The console's dependencies, its request guards, and the ASGI app mounted at ``/inbox``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.audit import AuditLog
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.console import ConsoleAuth, Session
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.http import json_error
from colaflow_mcp.web.security import COOKIE, CSRF_HEADER, SecurityHeaders, csrf_ok

PREFIX = "/inbox"
HERE = Path(__file__).parent


@dataclass
class Console:
    """What the console's handlers use; the runtime builds one."""

    settings: Settings
    auth: ConsoleAuth
    changes: ChangeService
    queries: Queries
    audit: AuditLog
    notifier: Notifier
    # Set at shutdown: live streams end (browsers reconnect, to another instance if any).
    closing: anyio.Event = field(default_factory=anyio.Event)

    async def shutdown(self) -> None:
        """End every live stream now (called before uvicorn waits for open responses)."""
        self.closing.set()


def console_of(request: Request) -> Console:
    """The app's console dependencies."""
    console: Console = request.app.state.console
    return console


def templates_of(request: Request) -> Jinja2Templates:
    """The page templates (autoescaped)."""
    templates: Jinja2Templates = request.app.state.templates
    return templates


async def session_of(request: Request) -> Session | None:
    """The signed-in reviewer behind the request's cookie, if any."""
    return await console_of(request).auth.session(request.cookies.get(COOKIE))


JsonHandler = Callable[[Request, Session, Console], Awaitable[Response]]


def json_endpoint(handler: JsonHandler, changes_state: bool = False
                  ) -> Callable[[Request], Awaitable[Response]]:
    """A JSON route on the session cookie; state changes also need the CSRF header."""

    async def run(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return json_error(401, "unauthorized", "not signed in (or the session ended): "
                              "open a new link from `colaflow-mcp login-link`")
        if changes_state and not csrf_ok(session.csrf_token, request.headers.get(CSRF_HEADER)):
            return json_error(403, "csrf", "missing or wrong X-CSRF-Token header: reload "
                              "the page and try again")
        return await handler(request, session, console_of(request))

    return run


STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.suffix in (".js", ".css", ".svg")}
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml"}


async def static_file(request: Request) -> Response:
    """``GET /inbox/static/{name}``: the package's script, style sheet and icon (nothing else)."""
    path = STATIC.get(request.path_params["name"])
    if path is None:
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, media_type=MEDIA[path.suffix],
                        headers={"cache-control": "no-cache"})


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
    )
    return Jinja2Templates(env=env)


def build_app(console: Console, routes: list[BaseRoute]) -> Starlette:
    """The console app (paths relative to ``/inbox``), every response with the security
    headers."""
    app = Starlette(
        routes=[*routes, Route("/static/{name}", static_file, methods=["GET", "HEAD"])],
        middleware=[Middleware(SecurityHeaders)],
    )
    app.state.console = console
    app.state.templates = _templates()
    return app


def route(path: str, endpoint: Callable[[Request], Awaitable[Any]], method: str = "GET"
          ) -> Route:
    """One console route."""
    return Route(path, endpoint, methods=[method])
