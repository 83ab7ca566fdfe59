"""What every console response carries (CSP and friends), the session cookie's rules, and
the CSRF check of every state-changing request."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "colaflow_console"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

# No inline script or style anywhere: templates carry data in attributes, the script is a
# file of the package; nothing may frame the console (clickjacking a decision).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware: the console's headers on every response it sends (pages, API,
    static files, errors); pages and API answers are never cached."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                ours = {*HEADERS, *(() if static else ("cache-control",))}
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in ours]
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def secure_request(request: Request) -> bool:
    """Whether the browser reached us over https: the scheme, as uvicorn gives it (it
    applies ``X-Forwarded-Proto`` from the proxies ``--forwarded-allow-ips`` trusts)."""
    return request.url.scheme in ("https", "wss")


def set_session_cookie(response: Response, request: Request, value: str,
                       max_age: int) -> None:
    """HttpOnly, SameSite=Strict, Secure under https; scoped to the console's path."""
    response.set_cookie(COOKIE, value, max_age=max_age, path="/inbox", httponly=True,
                        samesite="strict", secure=secure_request(request))


def clear_session_cookie(response: Response, request: Request) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(COOKIE, path="/inbox", httponly=True, samesite="strict",
                           secure=secure_request(request))


def csrf_ok(expected: str, presented: str | None) -> bool:
    """The request carries the session's CSRF token (constant-time comparison)."""
    return bool(presented) and hmac.compare_digest(expected.encode(),
                                                   (presented or "").encode())
