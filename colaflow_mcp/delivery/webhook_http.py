"""The HTTP side of webhooks: Standard Webhooks signing, and an httpx client that connects
only to vetted addresses.

Every new connection resolves the host, vets each address (``domain/netguard.py``) and
connects to the first one by its address, so what was vetted is what is reached: a name
that resolves to a public address for the check and to 127.0.0.1 for the connection (DNS
rebinding) cannot happen. TLS still names the host (SNI and certificate checks), and the
request keeps its ``Host``. Redirects are not followed; environment proxies are not used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterable, Iterable
from typing import Any

import httpcore
import httpx

from colaflow_mcp.domain.netguard import Resolver, system_resolver, vet


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the ``whsec_`` secret's key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
            "content-type": "application/json", "user-agent": "colaflow-mcp-webhooks/1"}


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting to vetted addresses only."""

    def __init__(self, allow_private: bool, resolve: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        """Resolve and vet ``host``, then connect to its first address."""
        addresses = await vet(host, port, self.allow_private, self.resolve)
        return await self._inner.connect_tcp(addresses[0], port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP."""
        raise OSError("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool on :class:`GuardedBackend`."""

    def __init__(self, backend: GuardedBackend, max_connections: int) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
            max_keepalive_connections=max_connections, keepalive_expiry=30.0,
            network_backend=backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send; of the response's body at most 64 KB is read and dropped (a webhook's
        answer is its status; reading a short body keeps the connection reusable)."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream,
            extensions=request.extensions)
        response = await self._pool.handle_async_request(core)
        try:
            received = 0
            assert isinstance(response.stream, AsyncIterable)
            async for chunk in response.stream:
                received += len(chunk)
                if received > 65536:
                    break
        finally:
            await response.aclose()
        return httpx.Response(status_code=response.status, headers=response.headers,
                              extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        await self._pool.aclose()


def client(allow_private: bool, timeout: float, max_connections: int,
           resolve: Resolver = system_resolver) -> httpx.AsyncClient:
    """The sender's one client: guarded, no redirects, no proxies from the environment."""
    transport = GuardedTransport(GuardedBackend(allow_private, resolve), max_connections)
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False,
                             trust_env=False)


__all__ = ["GuardedBackend", "GuardedTransport", "client", "sign", "signed_headers"]
