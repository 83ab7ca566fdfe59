"""Hub test helpers over the shared harness: a live server with hub timings, tenants, and
decisions made in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from colaflow_mcp.domain import admin
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub.server import HubServer
from colaflow_mcp.runtime import Runtime
from colaflow_mcp.store.tables import PendingChange, utcnow
from tests.harness import (
    HUB_TIMINGS,
    Harness,
    database_url_for,
    default_db_kind,
    fast_settings,
    live_server,
)


@dataclass
class Tenant:
    slug: str
    id: str
    key: str
    key_id: str
    agent: Principal
    reviewer: Principal
    token: str


@dataclass
class HubEnv:
    """A running server plus helpers to make tenants and decide changes in-process."""

    harness: Harness

    @property
    def port(self) -> int:
        return self.harness.port

    @property
    def app(self) -> Any:
        return self.harness.app

    @property
    def runtime(self) -> Runtime:
        return self.harness.runtime

    @property
    def base(self) -> str:
        return self.harness.base_url

    @property
    def hub_url(self) -> str:
        return f"{self.base}/hubs/mcp"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/hubs/mcp"

    @property
    def hub(self) -> HubServer:
        return self.runtime.hub

    async def tenant(self, slug: str) -> Tenant:
        db = self.runtime.db
        t = await admin.get_or_create_tenant(db, slug)
        row, key = await admin.create_api_key(db, t, name="test")
        await admin.create_project_direct(db, t.id, "WEB", "Website", "")
        agent = Principal(kind="agent", tenant_id=t.id, tenant_slug=t.slug, api_key_id=row.id)
        reviewer = Principal(kind="reviewer", tenant_id=t.id, tenant_slug=t.slug, user="rita")
        token = self.runtime.tokens.issue(t, "rita")
        return Tenant(slug, t.id, key, row.id, agent, reviewer, token)

    async def propose(self, t: Tenant, title: str = "Fix login",
                      expires_in: float | None = None) -> str:
        change = await self.runtime.changes.propose(
            t.agent, "create_issue", {"project_key": "WEB", "title": title},
            expires_in_seconds=expires_in,
        )
        return change.id

    async def approve(self, t: Tenant, change_id: str) -> None:
        await self.runtime.changes.approve(t.reviewer, change_id)

    async def reject(self, t: Tenant, change_id: str, reason: str) -> None:
        await self.runtime.changes.reject(t.reviewer, change_id, reason)

    async def expire_now(self, change_id: str) -> None:
        """Make a change overdue and run the real expiry pass (no waiting on the clock)."""
        async with self.runtime.db.write() as s:
            await s.exec(update(PendingChange)  # type: ignore[call-overload]
                         .where(col(PendingChange.id) == change_id)
                         .values(expires_at=utcnow() - timedelta(seconds=1)))
        await self.runtime.changes.expire_due()

    async def revoke(self, t: Tenant) -> None:
        await admin.revoke_api_key(self.runtime.db, t.key_id)


@asynccontextmanager
async def run_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[HubEnv]:
    """The whole app under uvicorn on 127.0.0.1 (the harness's ``live_server``), with the
    hub tests' timings (``HUB_TIMINGS``) and these overrides."""
    settings = fast_settings(await database_url_for(default_db_kind(), tmp_path),
                             **{**HUB_TIMINGS, **overrides})
    async with live_server(settings) as harness:
        yield HubEnv(harness)


ServerFactory = Callable[..., AbstractAsyncContextManager[HubEnv]]
