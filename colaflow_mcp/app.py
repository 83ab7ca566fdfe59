"""The Starlette app: REST, the MCP endpoint and the hub, under one lifespan and task group."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from colaflow_mcp import api
from colaflow_mcp.config import Settings
from colaflow_mcp.db import redact_url
from colaflow_mcp.services import Services

logger = logging.getLogger(__name__)


def _hub_class() -> Any:
    try:
        from colaflow_mcp.hub.server import HubServer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the hub lands in its own change
        return None
    return HubServer


def _mcp_class() -> Any:
    try:
        from colaflow_mcp.mcp_server import McpEndpoint  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the MCP endpoint lands in its own change
        return None
    return McpEndpoint


HUB_PATH = "/hubs/mcp"
MCP_PATH = "/mcp"


class PrefixDispatch:
    """Send ``/prefix`` and ``/prefix/...`` to a sub-app, with no trailing-slash redirects.

    SignalR clients call ``/hubs/mcp?id=…`` and MCP clients ``/mcp`` exactly; a plain
    ``Mount`` would answer those with a 307, which WebSockets and POSTs do not follow.
    """

    def __init__(self, app: Any, prefixes: dict[str, Any]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            for prefix, target in self.prefixes.items():
                if path == prefix or path.startswith(prefix + "/"):
                    rest = path[len(prefix):] or "/"
                    child = dict(scope)
                    child["path"] = rest
                    child["raw_path"] = rest.encode()
                    child["root_path"] = scope.get("root_path", "") + prefix
                    await target(child, receive, send)
                    return
        await self.app(scope, receive, send)


class _Lazy:
    """Routes are fixed at construction, components exist only once the lifespan runs."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.target is None:
            raise RuntimeError("the app is not started (lifespan has not run)")
        await self.target(scope, receive, send)


def _build(cls: Any, services: Services) -> Any:
    # TODO(integration): construct directly once the hub and MCP endpoint have landed.
    if cls is None:
        return None
    try:
        return cls(services)
    except Exception:
        logger.exception("could not start %s", cls.__name__)
        return None


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; its lifespan opens the database and starts the background loops."""
    settings = settings or Settings.from_env()
    hub_cls, mcp_cls = _hub_class(), _mcp_class()
    hub_router, mcp_app = _Lazy(), _Lazy()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await Services.create(settings)
        app.state.services = services
        logger.info(
            "colaflow-mcp instance %s: database %s, backplane %s",
            settings.instance_id, redact_url(settings.database_url), services.bus.name,
        )
        hub = _build(hub_cls, services)
        mcp = _build(mcp_cls, services)
        if hub is not None:
            hub_router.target = Starlette(routes=hub.routes)
        if mcp is not None:
            mcp_app.target = mcp.app
        app.state.hub = hub
        app.state.mcp = mcp
        try:
            async with AsyncExitStack() as stack:
                if mcp is not None:
                    await stack.enter_async_context(mcp.lifespan())
                async with anyio.create_task_group() as tg:
                    await services.run_background(tg)
                    if hub is not None:
                        tg.start_soon(hub.run)
                    try:
                        yield
                    finally:
                        if hub is not None:
                            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                                await hub.shutdown()
                        tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await services.aclose()

    routes: list[BaseRoute] = [*api.routes()]
    prefixes: dict[str, Any] = {}
    if hub_cls is not None:
        prefixes[HUB_PATH] = hub_router
    if mcp_cls is not None:
        prefixes[MCP_PATH] = mcp_app
    middleware = [Middleware(PrefixDispatch, prefixes=prefixes)]
    if settings.allowed_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.allowed_origins),
            allow_credentials=True, allow_methods=["*"], allow_headers=["*"],
            expose_headers=["Mcp-Session-Id"],
        ))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    return app
