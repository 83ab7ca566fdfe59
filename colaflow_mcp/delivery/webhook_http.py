"""The HTTP side of webhooks: Standard Webhooks signing, and an HTTP client (httpcore) that
connects only to vetted addresses.

Every new connection resolves the host, vets each address (``domain/netguard.py``) and
connects to the first one by its address, so what was vetted is what is reached: a name
that resolves to a public address for the check and to 127.0.0.1 for the connection (DNS
rebinding) cannot happen. TLS still names the host (SNI and certificate checks), and the
request keeps its ``Host``. Redirects are not followed; environment proxies are not used.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import select
import socket
import ssl
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
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


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes
                   ) -> list[tuple[bytes, bytes]]:
    """The headers of one attempt (besides ``host`` and ``content-length``)."""
    return [(b"webhook-id", msg_id.encode()), (b"webhook-timestamp", str(timestamp).encode()),
            (b"webhook-signature", sign(secret, msg_id, timestamp, body).encode()),
            (b"content-type", b"application/json"),
            (b"user-agent", b"colaflow-mcp-webhooks/1")]


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would not block (data, or the peer closed): an idle kept-alive
    connection that is readable is finished. No socket: treat as finished."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Corked(httpcore.AsyncNetworkStream):
    """A connection's stream whose writes wait for its next read, so a request's head and
    body leave in one send (one system call, one packet) instead of two; the pool's
    readability checks of idle connections go to the socket directly."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._out: list[bytes] = []
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int,
                   timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore's)
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            await self._inner.write(data, timeout)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes,
                    timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore's)
        if buffer:
            self._out.append(buffer)

    async def aclose(self) -> None:
        self._out.clear()
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                        ) -> httpcore.AsyncNetworkStream:
        return _Corked(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._sock)
        return self._inner.get_extra_info(info)


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
        return _Corked(await self._inner.connect_tcp(addresses[0], port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options))

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP."""
        raise OSError("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class Target:
    """An endpoint URL, parsed once (as httpx parses it): where a request goes and its
    ``Host`` header."""

    scheme: bytes
    host: bytes
    port: int | None
    path: bytes
    host_header: bytes


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """The parsed URL (cached: the sender posts to few URLs, many times)."""
    u = httpx.URL(url)
    return Target(u.raw_scheme, u.raw_host, u.port, u.raw_path, u.netloc)


class GuardedClient:
    """The sender's HTTP client: httpcore pools on :class:`GuardedBackend`, one small pool
    per endpoint. No redirects are followed, no proxies or cookies are used.

    It calls httpcore directly: httpx's client layer (URL merging, cookies, auth, redirect
    handling, its models) cost about a fifth of each request's CPU and gave a webhook
    nothing. And one pool per endpoint, not one shared: httpcore matches each request
    against every connection of its pool (checking each idle one for readability), so a
    pool of 64 connections cost about 3 ms of CPU per request under load
    (benchmarks/RESULTS.md, "Webhooks"). A pool holds at most ``per_endpoint``
    connections, which the sender's per-endpoint concurrency never exceeds; pools whose
    connections all expired are closed when a new one opens."""

    def __init__(self, allow_private: bool, timeout: float, per_endpoint: int,
                 resolve: Resolver = system_resolver) -> None:
        self._backend = GuardedBackend(allow_private, resolve)
        self._per_pool = per_endpoint
        self._ssl = httpx.create_ssl_context()
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout,
                          "pool": timeout}
        self._pools: dict[str, httpcore.AsyncConnectionPool] = {}
        self._busy: dict[str, int] = {}  # requests in flight per pool

    async def __aenter__(self) -> GuardedClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _pool(self, key: str) -> httpcore.AsyncConnectionPool:
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

    async def post(self, pool: str, url: str, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> int:
        """POST ``body`` to ``url`` over ``pool``'s connections; the status code. Of the
        response's body at most 64 KB is read and dropped (a webhook's answer is its
        status; reading a short body keeps the connection reusable)."""
        t = target_of(url)
        request = httpcore.Request(
            b"POST", httpcore.URL(scheme=t.scheme, host=t.host, port=t.port, target=t.path),
            headers=[(b"host", t.host_header), (b"content-length", str(len(body)).encode()),
                     *headers],
            content=body, extensions={"timeout": self._timeouts})
        connections = await self._pool(pool)
        self._busy[pool] = self._busy.get(pool, 0) + 1
        try:
            response = await connections.handle_async_request(request)
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
            left = self._busy[pool] - 1
            if left:
                self._busy[pool] = left
            else:
                del self._busy[pool]
        return response.status

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


__all__ = ["GuardedBackend", "GuardedClient", "Target", "sign", "signed_headers",
           "target_of"]
