"""Who is calling an MCP handler: HTTP auth → request scope → SDK middleware → contextvar.

The endpoint authenticates every HTTP request and puts the principal in the ASGI scope.
The SDK hands each handler the Starlette request it came on (``ctx.request``); this
middleware copies the principal from there into a contextvar for the handler's duration,
so every tool, resource (static ones included) and subscription handler can read it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError

from colaflow_mcp.domain.auth import Principal

SCOPE_KEY = "colaflow.principal"

_current: ContextVar[Principal | None] = ContextVar("colaflow_mcp_principal", default=None)


def principal_from_scope(scope: Any) -> Principal | None:
    """The principal the endpoint put in an ASGI scope."""
    value = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return value if isinstance(value, Principal) else None


def require_principal() -> Principal:
    """The authenticated caller of the current MCP request."""
    principal = _current.get()
    if principal is None:
        # Unreachable over HTTP (the endpoint answers 401 first); guards other transports.
        raise MCPError(types.INVALID_REQUEST, "not authenticated")
    return principal


class PrincipalMiddleware:
    """SDK server middleware: expose the request's principal to the handler."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
                       ) -> HandlerResult:
        request = ctx.request
        principal = principal_from_scope(getattr(request, "scope", None))
        token = _current.set(principal)
        try:
            return await call_next(ctx)
        finally:
            _current.reset(token)
