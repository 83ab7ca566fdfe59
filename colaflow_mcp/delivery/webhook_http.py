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
    """An httpx transport over httpcore pools on :class:`GuardedBackend`, one small pool per
    endpoint (the request's ``colaflow.pool`` extension; else per origin).

    One shared pool would do: but httpcore matches each request against every connection
    of its pool (checking each idle one for readability), so a pool of 64 connections cost
    about 3 ms of CPU per request under load (benchmarks/RESULTS.md, "Webhooks"). A pool
    per endpoint holds at most ``per_pool`` connections, which the sender's per-endpoint
    concurrency never exceeds; pools left with no connection are dropped."""

    def __init__(self, backend: GuardedBackend, per_pool: int) -> None:
        self._backend = backend
        self._per_pool = per_pool
        self._ssl = httpx.create_ssl_context()
        self._pools: dict[object, httpcore.AsyncConnectionPool] = {}
        self._busy: dict[object, int] = {}  # requests in flight per pool

    async def _pool(self, key: object) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(key)
        if pool is None:
            await self._prune()
            pool = self._pools[key] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl, max_connections=self._per_pool,
                max_keepalive_connections=self._per_pool, keepalive_expiry=30.0,
                network_backend=self._backend)
        return pool

    async def _prune(self) -> None:
        """Close and forget pools with nothing in flight whose connections (if any) all
        expired: endpoints that get nothing now."""
        stale = [k for k, p in self._pools.items() if not self._busy.get(k)
                 and all(c.has_expired() for c in p.connections)]
        for key in stale:
            await self._pools.pop(key).aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send; of the response's body at most 64 KB is read and dropped (a webhook's
        answer is its status; reading a short body keeps the connection reusable)."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        extensions = dict(request.extensions)
        key = extensions.pop("colaflow.pool", None) or (url.raw_scheme, url.raw_host,
                                                       url.port)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                             target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=extensions)
        pool = await self._pool(key)
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            response = await pool.handle_async_request(core)
            try:
                received = 0
                assert isinstance(response.stream, AsyncIterable)
                async for chunk in response.stream:
                    received += len(chunk)
                    if received > 65536:
                        break
            finally:
                await response.aclose()
        finally:
            left = self._busy[key] - 1
            if left:
                self._busy[key] = left
            else:
                del self._busy[key]
        return httpx.Response(status_code=response.status, headers=response.headers,
                              extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def client(allow_private: bool, timeout: float, per_endpoint: int,
           resolve: Resolver = system_resolver) -> httpx.AsyncClient:
    """The sender's one client: guarded, no redirects, no proxies from the environment; at
    most ``per_endpoint`` connections per endpoint (see :class:`GuardedTransport`)."""
    transport = GuardedTransport(GuardedBackend(allow_private, resolve), per_endpoint)
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False,
                             trust_env=False)


__all__ = ["GuardedBackend", "GuardedTransport", "client", "sign", "signed_headers"]
