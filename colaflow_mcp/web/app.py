"""The console app: its pages, its JSON API and its static files, under ``/inbox``."""

from __future__ import annotations

from starlette.applications import Starlette

from colaflow_mcp.web import api, pages
from colaflow_mcp.web.console import Console, build_app, route


def console_app(console: Console) -> Starlette:
    """The ASGI app served at ``/inbox`` (paths below are relative to it)."""
    return build_app(console, [route(path, endpoint, method)
                               for path, endpoint, method in [*pages.ROUTES, *api.ROUTES]])
