"""The Starlette app: REST, the MCP endpoint, the hub and the reviewer console (``/inbox``),
under one lifespan.

The lifespan builds the :class:`~colaflow_mcp.runtime.Runtime` and runs it; the runtime's
supervisor owns every background task.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from colaflow_mcp import logs, metrics
from colaflow_mcp.config import Settings
from colaflow_mcp.rest.decide_route import DecideRoute
from colaflow_mcp.rest.routes import routes as rest_routes
from colaflow_mcp.runtime import Runtime
from colaflow_mcp.store.engine import redact_url
from colaflow_mcp.web.app import console_app
from colaflow_mcp.web.console import PREFIX as CONSOLE_PATH

logger = logging.getLogger(__name__)


HUB_PATH = "/hubs/mcp"
MCP_PATH = "/mcp"


class PrefixDispatch:
    """Send ``/prefix`` and ``/prefix/...`` to a sub-app, with no trailing-slash redirects.

    SignalR clients call ``/hubs/mcp?id=…`` and MCP clients ``/mcp`` exactly; a plain
    ``Mount`` would answer those with a 307, which WebSockets and POSTs do not follow.

    Like the other layers here, a plain function that returns the next layer's awaitable:
    no frame of its own stays alive for as long as a connection is open (issue 14).
    """

    def __init__(self, app: Any, prefixes: dict[str, Any]) -> None:
        self.app = app
        self.prefixes = prefixes

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            for prefix, target in self.prefixes.items():
                if path == prefix or path.startswith(prefix + "/"):
                    rest = path[len(prefix):] or "/"
                    child = dict(scope)
                    child["path"] = rest
                    child["raw_path"] = rest.encode()
                    child["root_path"] = scope.get("root_path", "") + prefix
                    routed: Awaitable[None] = target(child, receive, send)
                    return routed
        other: Awaitable[None] = self.app(scope, receive, send)
        return other


class LogScope:
    """Every request and connection logs with a context of its own (``logs.scope``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = logs.open_scope()  # not ``with logs.scope()``: no generator per connection
        try:
            await self.app(scope, receive, send)
        finally:
            logs.close_scope(token)


class _Lazy:
    """Routes are fixed at construction, components exist only once the lifespan runs."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if self.target is None:
            raise RuntimeError("the app is not started (lifespan has not run)")
        result: Awaitable[None] = self.target(scope, receive, send)
        return result


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; its lifespan opens the database and starts the background loops."""
    settings = settings or Settings.from_env()
    hub_router, mcp_app, console = _Lazy(), _Lazy(), _Lazy()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.create(settings)
        logger.info(
            "colaflow-mcp instance %s: database %s, backplane %s",
            settings.instance_id, redact_url(settings.database_url), runtime.bus.name,
        )
        app.state.runtime = runtime
        app.state.rest = runtime.rest
        app.state.health = runtime.health
        app.state.ready = runtime.ready
        app.state.metrics = metrics.registry(runtime.live)
        app.state.hub = runtime.hub  # serving.HubAwareServer shuts it down first
        app.state.console = runtime.console  # and ends the console's live streams
        app.state.mcp = runtime.mcp  # and the MCP sessions' GET streams
        hub_router.target = runtime.hub.app()
        mcp_app.target = runtime.mcp.app
        console.target = console_app(runtime.console)
        async with runtime.running():
            yield

    routes: list[BaseRoute] = [*rest_routes()]
    prefixes: dict[str, Any] = {HUB_PATH: hub_router, MCP_PATH: mcp_app,
                                CONSOLE_PATH: console}
    middleware = [Middleware(LogScope)]
    if settings.allowed_origins:  # outermost, so the hub and MCP answer preflights too
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.allowed_origins),
            allow_credentials=True, allow_methods=["*"], allow_headers=["*"],
            expose_headers=["Mcp-Session-Id"],
        ))
    middleware.append(Middleware(PrefixDispatch, prefixes=prefixes))
    middleware.append(Middleware(DecideRoute))  # approve/reject ahead of the router
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    return app
