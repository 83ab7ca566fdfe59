"""What operators and load balancers call: ``/health`` (details for people),
``/health/live``, ``/health/ready`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from colaflow_mcp.config import Settings
from colaflow_mcp.domain.auth import bearer
from colaflow_mcp.http import NO_STORE, json_error
from colaflow_mcp.rest.openapi import Endpoint
from colaflow_mcp.rest.schemas import Health, Liveness, Readiness

# Each returns (healthy, body); the runtime puts them in ``app.state.health`` and
# ``app.state.ready``.
HealthCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


async def health(request: Request) -> Response:
    """200 with the body while the database answers, else 503 (``status`` says more)."""
    check: HealthCheck = request.app.state.health
    db_ok, body = await check()
    return JSONResponse(body, status_code=200 if db_ok else 503, headers=NO_STORE)


async def live(request: Request) -> Response:
    """The process answers (restart it if this fails)."""
    return JSONResponse({"status": "alive"}, headers=NO_STORE)


async def ready(request: Request) -> Response:
    """Ready to serve: the database answers in time, every background loop runs, the
    backplane is connected (when there is one), not shutting down; else 503 naming what
    is not (take the instance out of the load balancer)."""
    check: HealthCheck = request.app.state.ready
    ok, body = await check()
    return JSONResponse(body, status_code=200 if ok else 503, headers=NO_STORE)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process (bearer COLAFLOW_METRICS_TOKEN when set)."""
    settings: Settings = request.app.state.settings
    expected = settings.metrics_token
    if expected:
        given = bearer(request.headers.get("authorization")) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return json_error(401, "unauthorized",
                              "send 'Authorization: Bearer <COLAFLOW_METRICS_TOKEN>'",
                              {"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST,
                    headers=NO_STORE)


ENDPOINTS = [
    Endpoint("GET", "/health", health, "Health details (database, loops, backplane, edges)",
             response=Health, unavailable=True),
    Endpoint("GET", "/health/live", live, "Liveness: the process answers",
             response=Liveness),
    Endpoint("GET", "/health/ready", ready, "Readiness: may this instance take traffic?",
             response=Readiness, unavailable=True),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics of this process",
             raw=("text/plain", "Prometheus text format 0.0.4"), auth=("metrics",),
             errors=(401,)),
]
