"""Helpers for MCP tests: real SDK clients against a live server, notification waiters."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated

from colaflow_mcp.domain import admin
from tests.harness import Harness

Mode = Literal["legacy", "modern"]

# Raw HTTP in the legacy era (the SDK client hides what some tests look at).
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": LEGACY, "capabilities": {},
    "clientInfo": {"name": "raw-http", "version": "0"}}}


def legacy_headers(key: str, session_id: str | None = None) -> dict[str, str]:
    """A legacy request's headers: the agent's key, and the session once there is one."""
    headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT,
               "MCP-Protocol-Version": LEGACY}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    return headers


async def open_legacy_session(h: Harness, key: str) -> str:
    """``initialize`` and ``notifications/initialized`` over raw HTTP: the session's id."""
    r = await h.client.post("/mcp", json=INIT, headers=legacy_headers(key))
    assert r.status_code == 200, r.text
    session_id: str = r.headers["mcp-session-id"]
    r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                            headers=legacy_headers(key, session_id))
    assert r.status_code == 202, r.text
    return session_id


async def revoke_agent_key(h: Harness, key: str) -> None:
    """Revoke an agent's key as a reviewer would (its sessions end with it)."""
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None and principal.api_key_id is not None
    assert await admin.revoke_api_key(h.runtime.db, principal.api_key_id)


def http_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    """The HTTP client the SDK transport uses: our auth header, long reads for SSE."""
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))


class Updates:
    """Collects ``notifications/resources/updated`` (legacy era) and lets a test wait on a URI."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._changed = anyio.Event()

    async def handler(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for_more(self) -> None:
        """Wait for the next update, whatever its URI."""
        await self._changed.wait()

    async def wait_for(self, uri: str) -> None:
        """Wait (bounded by the caller's ``fail_after``) until ``uri`` was updated."""
        while uri not in self.uris:
            await self._changed.wait()


@asynccontextmanager
async def mcp_client(
    h: Harness, key: str, mode: Mode = "modern", updates: Updates | None = None,
    header: Literal["bearer", "x-api-key"] = "bearer",
) -> AsyncIterator[Client]:
    """The official Python client over Streamable HTTP, authenticated with an API key."""
    headers = ({"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key})
    async with http_client(headers) as http:
        transport = streamable_http_client(f"{h.base_url}/mcp", http_client=http)
        client = Client(
            transport, mode="legacy" if mode == "legacy" else "auto",
            # Modern-era listen events are also teed to the message handler; they are
            # collected from the listen stream instead (see ``watching``).
            message_handler=updates.handler if updates is not None and mode == "legacy"
            else None,
            cache=None,
        )
        async with client:
            yield client


async def subscribe(client: Client, uri: str) -> None:
    """Legacy ``resources/subscribe`` (deprecated in the SDK for 2026 servers, hence the filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.session.subscribe_resource(uri)


async def unsubscribe(client: Client, uri: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.session.unsubscribe_resource(uri)


async def read_json(client: Client, uri: str) -> dict[str, Any]:
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, types.TextResourceContents)
    data: dict[str, Any] = json.loads(content.text)
    return data


async def propose_issue(client: Client, title: str = "Fix the login page",
                        **extra: Any) -> dict[str, Any]:
    result = await client.call_tool("create_issue",
                                    {"project_key": "WEB", "title": title, **extra})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


@asynccontextmanager
async def watching(client: Client, mode: Mode, updates: Updates, uris: list[str]
                   ) -> AsyncIterator[list[str]]:
    """Watch ``uris`` in the client's era; yields the honored URIs.

    Legacy: ``resources/subscribe`` each (a refused one raises). Modern: one
    ``subscriptions/listen`` stream whose events feed ``updates``.
    """
    if mode == "legacy":
        for uri in uris:
            await subscribe(client, uri)
        yield list(uris)
        return
    async with client.listen(resource_subscriptions=uris) as sub, \
            anyio.create_task_group() as tg:
        async def pump() -> None:
            async for event in sub:
                if isinstance(event, ResourceUpdated):
                    await updates.handler(types.ResourceUpdatedNotification(
                        params=types.ResourceUpdatedNotificationParams(uri=event.uri)))

        tg.start_soon(pump)
        yield list(sub.honored.resource_subscriptions or [])
        tg.cancel_scope.cancel()
