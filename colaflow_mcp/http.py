"""HTTP pieces every edge shares: the JSON error body and the no-store header.

Knows nothing of the domain, so REST, MCP and the hub may all import it without
importing each other.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# Answers that must never be cached (negotiate bodies, polls, errors).
NO_STORE = {"Cache-Control": "no-cache, no-store"}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
               **extra: Any) -> JSONResponse:
    """The one JSON error shape: ``{"error": code, "message": text, …}``."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status,
                        headers=headers)
