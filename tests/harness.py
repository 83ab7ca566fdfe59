"""The test harness: an app on its own database, in-process or served on a real socket.

One way to start a server (:func:`live_server`, used by the hub fixtures too) and one
settings factory (:func:`fast_settings`, with :data:`HUB_TIMINGS` for the hub tests).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from colaflow_mcp.app import create_app
from colaflow_mcp.config import Settings
from colaflow_mcp.domain import admin
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.runtime import Runtime
from colaflow_mcp.serving import uvicorn_config
from tests import pgdb


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether this run is CI (``CI`` is 1, true or yes, any case): the one definition.

    In CI a missing service or client is a failure, never a skip.
    """
    value = (os.environ if env is None else env).get("CI", "")
    return value.strip().lower() in ("1", "true", "yes")


IN_CI = in_ci()
REDIS_URL = os.environ.get("COLAFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_address(url: str = REDIS_URL) -> tuple[str, int]:
    """Host and port of the Redis the tests use."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def redis_url_at(host: str, port: int, url: str = REDIS_URL) -> str:
    """The tests' Redis URL (credentials, database number) pointed at ``host:port``: a
    proxy in front of it."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def absent(reason: str) -> NoReturn:
    """Something the test needs is missing: skip, or fail in CI (see :func:`in_ci`)."""
    if in_ci():
        pytest.fail(f"{reason} (in CI this is a failure, not a skip)")
    pytest.skip(reason)


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a reason when a service is absent; in CI a missing service fails."""
    if not _reachable(host, port):
        absent(f"{name} is not reachable at {host}:{port}")


async def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; its plain URL. Dropped when the test ends (by
    the autouse fixture of tests/conftest.py), or earlier with ``pgdb.drop_database``."""
    require_service("PostgreSQL", *pgdb.admin_address())
    return await pgdb.create_database()


def default_db_kind() -> str:
    """COLAFLOW_TEST_DB=postgres runs the whole suite on PostgreSQL."""
    return os.environ.get("COLAFLOW_TEST_DB", "sqlite")


async def database_url_for(kind: str, tmp_path: Path) -> str:
    """A fresh database of this kind (``sqlite`` or ``postgres``)."""
    if kind == "postgres":
        return await create_pg_database()
    return f"sqlite:///{tmp_path / 'colaflow-test.db'}"


# The recovery loops (announce sweep, reconcile) a test runs with unless it asks for them:
# far beyond any test's wait, so a decision a test sees delivered came by the fast path
# (the dispatch after commit, the backplane, the catch-up at subscribe), never by a safety
# net that would hide a broken fast path a few seconds later.
SAFETY_NETS_FAR_AWAY: dict[str, Any] = {
    "announce_sweep_interval_seconds": 3600.0,
    "reconcile_interval_seconds": 3600.0,
}
# For tests of the safety nets themselves, and of exactly-once across them.
SAFETY_NETS_ON: dict[str, Any] = {
    "announce_sweep_interval_seconds": 0.2,
    "announce_grace_seconds": 0.5,
    "reconcile_interval_seconds": 0.3,
}
RECOVERY_LOOPS = ("announce-sweep", "reconcile")


async def recovery_passes(runtime: Runtime, passes: int = 2, within: float = 20.0,
                          loops: tuple[str, ...] = RECOVERY_LOOPS) -> None:
    """Wait until the announce sweep and the reconcile loop (or ``loops``) have each
    completed ``passes`` more passes than now.

    Absence of a duplicate can only be observed over a window; this makes it the window
    that matters: with ``passes=2``, at least one whole sweep and one whole reconcile,
    started after the call.
    """
    supervisor = runtime.supervisor
    start = {loop: supervisor.passes.get(loop, 0) for loop in loops}
    with anyio.fail_after(within):
        while any(supervisor.passes.get(loop, 0) - start[loop] < passes for loop in loops):
            await supervisor.pass_completed.wait()


# Test-sized timings: the production shape, fast enough for tests; safety nets far away.
FAST: dict[str, Any] = {
    "expiry_max_wait_seconds": 0.2,
    **SAFETY_NETS_FAR_AWAY,
    "announce_grace_seconds": 0.5,
    "bus_reconnect_max_backoff_seconds": 0.5,
    "api_key_cache_seconds": 0.0,
    "revocation_check_interval_seconds": 0.2,
    "hub_keep_alive_seconds": 1.0,
    "hub_client_timeout_seconds": 5.0,
    "hub_handshake_timeout_seconds": 2.0,
    "hub_disconnect_timeout_seconds": 2.0,
    "hub_long_poll_seconds": 5.0,
}

# The hub tests run real clients whose own keep-alive (15 s) and timeouts are SignalR's
# defaults: the server keeps those, so only the test's own actions make things happen.
HUB_TIMINGS: dict[str, Any] = {
    "hub_keep_alive_seconds": 15.0,
    "hub_client_timeout_seconds": 30.0,
    "hub_handshake_timeout_seconds": 15.0,
    "hub_disconnect_timeout_seconds": 5.0,
    "expiry_max_wait_seconds": 0.05,
    "announce_grace_seconds": 2.0,
    "bus_reconnect_max_backoff_seconds": 5.0,
}


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Production shape, test-sized timings (:data:`FAST`), then ``overrides``."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": "test-secret-" + uuid.uuid4().hex,
        **FAST,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    """One app with its own database; helpers to create tenants, keys and tokens."""

    app: Starlette
    settings: Settings
    client: httpx.AsyncClient
    base_url: str = "http://testserver"
    _keys: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        """The running app's object graph."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def port(self) -> int:
        """The port of a live server."""
        return int(self.base_url.rsplit(":", 1)[1])

    async def agent_key(self, tenant: str = "acme", name: str = "agent") -> str:
        """A new API key for the tenant (created if needed)."""
        t = await admin.get_or_create_tenant(self.runtime.db, tenant)
        _, key = await admin.create_api_key(self.runtime.db, t, name)
        return key

    async def reviewer_token(self, tenant: str = "acme", user: str = "alice") -> str:
        t = await admin.get_or_create_tenant(self.runtime.db, tenant)
        return self.runtime.tokens.issue(t, user)

    async def project(self, tenant: str = "acme", key: str = "WEB", name: str = "Website") -> None:
        t = await admin.get_or_create_tenant(self.runtime.db, tenant)
        await admin.create_project_direct(self.runtime.db, t.id, key, name)

    async def propose(self, key: str, tool: str = "create_issue",
                      arguments: dict[str, Any] | None = None,
                      expires_in_seconds: float | None = None) -> dict[str, Any]:
        """Propose over REST as an agent; returns the change JSON."""
        body: dict[str, Any] = {
            "tool": tool,
            "arguments": arguments if arguments is not None
            else {"project_key": "WEB", "title": "Fix the login page"},
        }
        if expires_in_seconds is not None:
            body["expiresInSeconds"] = expires_in_seconds
        r = await self.client.post("/api/mcp/pending-changes", json=body,
                                   headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def approve(self, token: str, change_id: str) -> httpx.Response:
        return await self.client.post(f"/api/mcp/pending-changes/{change_id}/approve",
                                      headers={"Authorization": f"Bearer {token}"})

    async def reject(self, token: str, change_id: str, reason: str | None = "no") -> httpx.Response:
        return await self.client.post(f"/api/mcp/pending-changes/{change_id}/reject",
                                      json={"reason": reason},
                                      headers={"Authorization": f"Bearer {token}"})


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[Harness]:
    """The app driven through httpx's ASGI transport, lifespan running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield Harness(app=app, settings=settings, client=c)


class _ReadyServer(uvicorn.Server):
    """uvicorn that says when start-up is over (serving, or failed): no polling, no sleeps."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()

    def install_signal_handlers(self) -> None:  # tests own the signals
        pass


@asynccontextmanager
async def served_config(config: uvicorn.Config) -> AsyncIterator[int]:
    """uvicorn with ``config`` on its own bound socket in this event loop, until the block
    ends; yields the port."""
    server = _ReadyServer(config)
    sock = config.bind_socket()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            await server.ready.wait()
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
    sock.close()


async def two_projects(h: Harness) -> tuple[str, Principal, Principal]:
    """An agent key with projects WEB and OPS: the tenant, the agent and a reviewer."""
    key = await h.agent_key()
    await h.project(key="WEB")
    await h.project(key="OPS", name="Operations")
    agent = await h.runtime.auth.authenticate(key)
    assert agent is not None
    reviewer = Principal(kind="reviewer", tenant_id=agent.tenant_id,
                         tenant_slug=agent.tenant_slug, user="rita")
    return agent.tenant_id, agent, reviewer


@asynccontextmanager
async def live_server(settings: Settings, server_class: type[uvicorn.Server] | None = None,
                      **overrides: Any) -> AsyncIterator[Harness]:
    """The app served by uvicorn (configured as ``serve`` does, then ``overrides``) on an
    ephemeral 127.0.0.1 port, in this event loop; ``server_class``: a ``uvicorn.Server``
    subclass to serve with instead (its ``startup`` is wrapped to say when it is ready)."""
    app = create_app(settings)
    config = uvicorn_config(app, settings, **{
        "host": "127.0.0.1", "port": 0, "log_level": "warning",
        "timeout_graceful_shutdown": 2, **overrides})
    server = (_ReadyServer(config) if server_class is None
              else type("Ready" + server_class.__name__, (_ReadyServer, server_class), {})(config))
    sock = config.bind_socket()
    port = sock.getsockname()[1]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(20):
                await server.ready.wait()
            if server.should_exit:
                raise RuntimeError("server failed to start")
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:
                try:
                    yield Harness(app=app, settings=settings, client=c, base_url=base)
                finally:
                    server.should_exit = True
    finally:
        sock.close()
