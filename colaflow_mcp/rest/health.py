"""``GET /health``: database, backplane, every background loop, edges' counters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Returns (database answers, body); the runtime puts one in ``app.state.health``.
HealthCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


async def health(request: Request) -> Response:
    """200 with the body while the database answers, else 503 (``status`` says more)."""
    check: HealthCheck = request.app.state.health
    db_ok, body = await check()
    return JSONResponse(body, status_code=200 if db_ok else 503)
