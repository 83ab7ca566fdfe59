"""A TCP proxy a test can cut and restore, to simulate a backplane outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import SocketStream


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every link and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        # Links stay open but nothing passes (a peer that went silent, e.g. a network
        # partition without resets); until ``restore``.
        self.silent = False
        self._links: set[anyio.CancelScope] = set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(self.port)
        await listener.serve(self._handle)

    def cut(self) -> None:
        self.refusing = True
        for scope in list(self._links):
            scope.cancel()

    def silence(self) -> None:
        """Keep every link open but let nothing through (new links are refused)."""
        self.refusing = self.silent = True

    def restore(self) -> None:
        self.refusing = self.silent = False

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if self.refusing:
                return
            try:
                upstream = await anyio.connect_tcp(self.target_host, self.target_port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                self._links.add(tg.cancel_scope)
                try:
                    tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                    tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
                finally:
                    pass
            self._links.discard(tg.cancel_scope)

    async def _pump(self, src: SocketStream, dst: SocketStream, scope: anyio.CancelScope
                    ) -> None:
        try:
            async for chunk in src:
                if not self.silent:
                    await dst.send(chunk)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            pass
        scope.cancel()


@asynccontextmanager
async def proxy_to(host: str, port: int) -> AsyncIterator[TcpProxy]:
    """A running :class:`TcpProxy` to ``host:port`` (stopped on exit)."""
    proxy = TcpProxy(host, port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.run)
        yield proxy
        tg.cancel_scope.cancel()


@asynccontextmanager
async def proxied_postgres() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A fresh PostgreSQL database reached through a proxy a test can cut: the proxy and
    the database URL that goes through it."""
    from sqlalchemy.engine import make_url

    from tests import pgdb
    from tests.harness import create_pg_database

    url = make_url(await create_pg_database())
    async with proxy_to(*pgdb.admin_address()) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
