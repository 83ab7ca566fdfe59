"""A real server (uvicorn on an ephemeral port) running the whole app, for hub tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from sqlalchemy import update
from sqlmodel import col

from colaflow_mcp import auth
from colaflow_mcp.app import create_app
from colaflow_mcp.config import Settings
from colaflow_mcp.http_protocols import http_protocol
from colaflow_mcp.hub.serving import HubWebSocketProtocol
from colaflow_mcp.models import PendingChange, utcnow
from colaflow_mcp.services import Services
from tests.harness import SAFETY_NETS_FAR_AWAY

# Small, fast values; each test may override. The safety nets are far away: what a hub
# test sees delivered came by the fast path (see tests/harness.py).
FAST = {
    **SAFETY_NETS_FAR_AWAY,
    "hub_keep_alive_seconds": 15.0,
    "hub_client_timeout_seconds": 30.0,
    "hub_handshake_timeout_seconds": 15.0,
    "hub_disconnect_timeout_seconds": 5.0,
    "hub_long_poll_seconds": 5.0,
    "revocation_check_interval_seconds": 0.2,
    "api_key_cache_seconds": 0.0,
    "expiry_max_wait_seconds": 0.05,
}


class _Server(uvicorn.Server):
    """uvicorn that says when it is serving (no polling, no sleeps)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:  # tests own the signals
        pass


@dataclass
class Tenant:
    slug: str
    id: str
    key: str
    key_id: str
    agent: auth.Principal
    reviewer: auth.Principal
    token: str


@dataclass
class HubEnv:
    """A running server plus helpers to make tenants and decide changes in-process."""

    port: int
    app: Any
    services: Services

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub_url(self) -> str:
        return f"{self.base}/hubs/mcp"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/hubs/mcp"

    @property
    def hub(self) -> Any:
        return self.app.state.hub

    async def tenant(self, slug: str) -> Tenant:
        db = self.services.db
        t = await auth.get_or_create_tenant(db, slug)
        row, key = await auth.create_api_key(db, t, name="test")
        await self.services.changes.create_project_direct(t.id, "WEB", "Website", "")
        agent = auth.Principal(kind="agent", tenant_id=t.id, tenant_slug=t.slug,
                               api_key_id=row.id)
        reviewer = auth.Principal(kind="reviewer", tenant_id=t.id, tenant_slug=t.slug,
                                  user="rita")
        token = self.services.tokens.issue(t, "rita")
        return Tenant(slug, t.id, key, row.id, agent, reviewer, token)

    async def propose(self, t: Tenant, title: str = "Fix login",
                      expires_in: float | None = None) -> str:
        change = await self.services.changes.propose(
            t.agent, "create_issue", {"project_key": "WEB", "title": title},
            expires_in_seconds=expires_in,
        )
        return change.id

    async def approve(self, t: Tenant, change_id: str) -> None:
        await self.services.changes.approve(t.reviewer, change_id)

    async def reject(self, t: Tenant, change_id: str, reason: str) -> None:
        await self.services.changes.reject(t.reviewer, change_id, reason)

    async def expire_now(self, change_id: str) -> None:
        """Make a change overdue and run the real expiry pass (no waiting on the clock)."""
        async with self.services.db.write() as s:
            await s.exec(update(PendingChange)  # type: ignore[call-overload]
                         .where(col(PendingChange.id) == change_id)
                         .values(expires_at=utcnow() - timedelta(seconds=1)))
        await self.services.changes.expire_due()

    async def revoke(self, t: Tenant) -> None:
        await auth.revoke_api_key(self.services.db, t.key_id)


@asynccontextmanager
async def run_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[HubEnv]:
    """Start the whole app under uvicorn on 127.0.0.1, port chosen by the OS."""
    values = {**FAST, **overrides}
    import os

    from tests.harness import database_url_for

    kind = os.environ.get("COLAFLOW_TEST_DB", "sqlite")  # postgres: the suite on PostgreSQL
    settings = Settings(
        database_url=await database_url_for(kind, tmp_path),
        jwt_secret="test-secret-" + "x" * 32,
        **values,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", log_config=None,
        ws_max_size=max(settings.hub_max_message_bytes * 4, 1 << 20),
        # WebSockets as `colaflow-mcp serve` runs them (cli._serve).
        ws=HubWebSocketProtocol, ws_per_message_deflate=False, ws_ping_interval=None,
        timeout_graceful_shutdown=2,
        http=http_protocol(settings),  # as `colaflow-mcp serve` does
    )
    server = _Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            await server.ready.wait()
        try:
            yield HubEnv(port=port, app=app, services=app.state.services)
        finally:
            server.should_exit = True
    sock.close()


ServerFactory = Callable[..., AbstractAsyncContextManager[HubEnv]]


