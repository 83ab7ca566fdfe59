"""HTTP pieces every edge shares: the JSON error body, the no-store header and the JSON
request-body reader.

Knows nothing of the domain, so REST, MCP and the hub may all import it without
importing each other.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

# Answers that must never be cached (negotiate bodies, polls, errors).
NO_STORE = {"Cache-Control": "no-cache, no-store"}

# The ASGI scope extension (``scope["extensions"][DETACH]``) by which a held response
# (an SSE stream whose head is sent) asks the server to let go of the request: the server's
# ``http_protocols`` offers it; the callable takes the stream's owner and returns what to
# send on from then on, or None (not possible now: serve the response as usual).
DETACH = "colaflow.detach"


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
               **extra: Any) -> JSONResponse:
    """The one JSON error shape: ``{"error": code, "message": text, …}``."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status,
                        headers=headers)


class BodyTooLarge(Exception):
    """The request body is over the size limit (answer 413)."""


class BadBody(ValueError):
    """The request body is not a JSON object (answer 400)."""


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, within ``limit`` bytes (declared or streamed);
    an empty body is ``{}``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body too large (limit {limit} bytes)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body too large (limit {limit} bytes)")
    return json_object(body)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body's bytes as a JSON object (BadBody if not); empty or blank is ``{}``."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body, parse_constant=_not_json)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody("body is nested too deeply to be read as JSON") from None
    except (ValueError, UnicodeDecodeError):
        raise BadBody("body must be JSON") from None
    if not isinstance(data, dict):
        raise BadBody("body must be a JSON object")
    return data


def _not_json(constant: str) -> Any:
    # Python's json module reads NaN and Infinity; JSON has neither.
    raise BadBody(f"body must be JSON: {constant} is not a JSON value")
