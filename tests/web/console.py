"""Helpers of the console tests: sign-in links, and a signed-in browser page or HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from colaflow_mcp.domain import admin
from tests.harness import Harness


async def login_url(h: Harness, tenant: str = "acme", user: str = "alice",
                    minutes: float = 15.0, base: str | None = None) -> str:
    """A fresh one-time sign-in link, as ``colaflow-mcp login-link`` prints it."""
    t = await admin.get_or_create_tenant(h.runtime.db, tenant)
    token = await h.runtime.console.auth.create_link(t, user, minutes)
    return f"{base or h.base_url}/inbox/login?token={token}"


async def signed_in_page(browser: Any, h: Harness, tenant: str = "acme",
                         user: str = "alice", base: str | None = None,
                         viewport: dict[str, int] | None = None) -> Any:
    """A new browser context signed in through a link, on /inbox with the queue live."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(await login_url(h, tenant, user, base=base))
    await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    return page


@asynccontextmanager
async def signed_in_client(h: Harness, tenant: str = "acme", user: str = "alice"
                           ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An HTTP client holding a session cookie, and the session's CSRF token."""
    async with httpx.AsyncClient(base_url=h.base_url, timeout=30) as client:
        r = await client.get(await login_url(h, tenant, user))
        assert r.status_code == 303 and r.headers["location"] == "/inbox", r.text
        page = await client.get("/inbox")
        marker = 'name="csrf-token" content="'
        start = page.text.index(marker) + len(marker)
        yield client, page.text[start:page.text.index('"', start)]
