"""An agent that proposes a ColaFlow change over MCP and waits for the human decision.

Uses the official MCP Python SDK (``pip install "mcp==2.3.*"``). It proposes an issue,
subscribes to the pending change and prints the outcome as soon as a reviewer decides
(reading the change itself only as the fallback described below).

    export COLAFLOW_API_KEY=cola_...            # colaflow-mcp keys create --tenant acme
    python examples/mcp_agent.py --project WEB --title "Fix the login page"
    # in another terminal, as a reviewer:
    #   curl -X POST -H "Authorization: Bearer $REVIEWER_TOKEN" \\
    #        http://127.0.0.1:8000/api/mcp/pending-changes/<id>/approve

``--legacy`` uses the 2025 protocol era (``resources/subscribe`` and the session's GET
stream, as the TypeScript SDK and Claude Desktop do) instead of 2026-07-28's
``subscriptions/listen``.

The agent does not rely on the stream alone. The Python SDK reconnects a dropped GET
stream once (after the server's ``retry:`` hint, 3 s) and then gives up for the rest of
the session without telling anyone, and a request that fails on a broken connection ends
the whole client. So whenever ``--recheck`` seconds pass without an update the agent reads
the change itself, and after a lost connection it connects again and subscribes again
(which reports an already-decided change at once).

Behind a load balancer (docs/scale-out.md) a session lives on one instance. If that
instance goes away, the session's next request (often the SDK's own attempt to reopen the
GET stream) is answered 404 by another instance: the agent sees that 404 at once, starts a
new session (on a live instance), subscribes again and reads the change. Reads and
subscribes are safe to repeat; the proposal itself is not (a repeated ``create_issue`` would
propose twice), so a proposal that fails is reported, not retried.

A key the server refuses (401: mistyped, or revoked while the agent waits) ends the agent
with the server's message and exit status 2: connecting again cannot help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp import Client
from mcp.client.session import MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated

RECONNECT_DELAY = 2.0
# What the server said when it refused the API key (401): the SDK only raises "Server
# returned an error response", and trying again cannot help, so the agent says this and stops.
REFUSED: list[str] = []


def http_client(headers: dict[str, str],
                on_session_lost: Callable[[], None] | None = None) -> httpx2.AsyncClient:
    """The HTTP client the SDK transport uses: our auth header, long reads for SSE,
    ``on_session_lost`` called when the server no longer knows the session (404), and the
    server's word kept when it refuses the key (401)."""
    async def check(response: httpx2.Response) -> None:
        if response.status_code == 401:
            await response.aread()
            try:
                REFUSED.append(str(response.json()["message"]))
            except (ValueError, KeyError, TypeError):
                REFUSED.append(response.text[:200])
        if (on_session_lost is not None and response.status_code == 404
                and "mcp-session-id" in response.request.headers):
            on_session_lost()

    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300),
                              event_hooks={"response": [check]})


def say(text: str) -> None:
    print(text, flush=True)


def reason(exc: BaseException) -> str:
    """The first underlying error of what the SDK raised (often nested task-group errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:200]


@asynccontextmanager
async def connect(url: str, key: str, legacy: bool,
                  on_message: MessageHandlerFnT | None = None,
                  on_session_lost: Callable[[], None] | None = None) -> AsyncIterator[Client]:
    """An MCP session with the API key; ``legacy`` picks the 2025 protocol era."""
    async with http_client({"Authorization": f"Bearer {key}"}, on_session_lost) as http:
        client = Client(streamable_http_client(url, http_client=http),
                        mode="legacy" if legacy else "auto", message_handler=on_message)
        async with client:
            yield client


async def read_change(client: Client, uri: str) -> dict[str, Any]:
    read = await client.read_resource(uri)
    content = read.contents[0]
    assert isinstance(content, types.TextResourceContents)
    change: dict[str, Any] = json.loads(content.text)
    return change


async def until_decided(client: Client, uri: str, updates: MemoryObjectReceiveStream[str],
                        recheck: float) -> dict[str, Any]:
    """Read the change now, then after each update or ``recheck`` s without one."""
    while True:
        change = await read_change(client, uri)
        if change["status"] != "Pending":
            return change
        with anyio.move_on_after(recheck):
            await updates.receive()


async def watch(url: str, key: str, uri: str, legacy: bool, recheck: float,
                announce: Callable[[str], None]) -> dict[str, Any]:
    """One session: subscribe to the change and wait until it is decided."""
    send, updates = anyio.create_memory_object_stream[str](16)

    def updated(updated_uri: str) -> None:
        if updated_uri == uri:
            try:
                send.send_nowait(updated_uri)
            except anyio.WouldBlock:
                pass  # enough wake-ups are queued already

    async def on_message(message: Any) -> None:
        # Legacy era: updates arrive as notifications on the session's GET stream.
        if isinstance(message, types.ResourceUpdatedNotification):
            updated(str(message.params.uri))

    def session_lost() -> None:
        # The next read fails with "Session not found", and the caller starts a new session.
        updated(uri)

    with send, updates:
        async with connect(url, key, legacy, on_message if legacy else None,
                           session_lost) as client:
            if legacy:
                with warnings.catch_warnings():  # deprecated only for 2026-era servers
                    warnings.simplefilter("ignore")
                    await client.session.subscribe_resource(uri)
                announce("waiting for a reviewer (resources/subscribe) ...")
                change = await until_decided(client, uri, updates, recheck)
            else:
                async with client.listen(resource_subscriptions=[uri]) as subscription, \
                        anyio.create_task_group() as tg:
                    async def pump() -> None:
                        async for event in subscription:
                            if isinstance(event, ResourceUpdated):
                                updated(event.uri)

                    tg.start_soon(pump)
                    announce("waiting for a reviewer (subscriptions/listen) ...")
                    change = await until_decided(client, uri, updates, recheck)
                    tg.cancel_scope.cancel()
    return change


async def wait_for_decision(url: str, key: str, uri: str, legacy: bool, recheck: float
                            ) -> dict[str, Any]:
    """Watch the change, connecting again (and subscribing again) after a lost connection."""
    announced = False
    quick = False  # the next attempt is made at once (see below)

    def watching(text: str) -> None:
        nonlocal announced, quick
        # Once a session watched, the first attempt after losing it is made at once: behind
        # a load balancer another instance is most likely up. Later ones wait (a server
        # that is down, or a proxy that misroutes sessions, must not make a busy loop).
        quick = True
        if not announced:
            announced = True
            say(text)

    while True:
        try:
            return await watch(url, key, uri, legacy, recheck, watching)
        except Exception as exc:  # the SDK ends the whole client when a request fails
            if REFUSED:  # the key was revoked meanwhile: no connection will do
                raise
            delay = 0.0 if quick else RECONNECT_DELAY
            quick = False
            say(f"connection lost ({reason(exc)}); connecting again"
                + (f" in {delay:g} s" if delay else ""))
            await anyio.sleep(delay)


async def run(url: str, key: str, project: str, title: str, legacy: bool,
              expires: float | None, recheck: float) -> int:
    try:
        return await propose_and_wait(url, key, project, title, legacy, expires, recheck)
    except Exception:
        if not REFUSED:
            raise
        say(f"the server refused the API key: {REFUSED[0]} "
            "(COLAFLOW_API_KEY: colaflow-mcp keys create --tenant SLUG prints one)")
        return 2


async def propose_and_wait(url: str, key: str, project: str, title: str, legacy: bool,
                           expires: float | None, recheck: float) -> int:
    arguments: dict[str, Any] = {"project_key": project, "title": title}
    if expires is not None:
        arguments["expires_in_seconds"] = expires
    try:
        async with connect(url, key, legacy) as client:
            result = await client.call_tool("create_issue", arguments)
    except Exception as exc:  # nothing proposed yet (or unknown): say why, do not retry
        if REFUSED:
            raise
        say(f"could not propose: {reason(exc)} (is the server running at {url}?)")
        return 1
    if result.is_error or result.structured_content is None:
        block = result.content[0] if result.content else None
        say("proposal refused: "
            + (block.text if isinstance(block, types.TextContent) else str(result)))
        return 2
    proposal = result.structured_content
    uri = proposal["resourceUri"]
    say(f"proposed: {proposal['summary']}")
    say(f"pending change: {proposal['pendingChangeId']}  ({uri})")
    change = await wait_for_decision(url, key, uri, legacy, recheck)

    status = change["status"]
    if status == "Approved":
        outcome = change.get("executionResult") or {}
        detail = (f"executed, {change['entityType'].lower()} {outcome.get('entityId')}"
                  if outcome.get("success") else f"but execution failed: {outcome.get('error')}")
        say(f"decision: Approved by {change['decidedBy']}; {detail}")
    elif status == "Rejected":
        say(f"decision: Rejected by {change['decidedBy']}: {change['reason']}")
    else:
        say(f"decision: {status}")
    return 0 if status == "Approved" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("COLAFLOW_MCP_URL",
                                                        "http://127.0.0.1:8000/mcp"))
    parser.add_argument("--project", default="WEB")
    parser.add_argument("--title", default="Fix the login page")
    parser.add_argument("--expires", type=float, help="seconds before the proposal expires")
    parser.add_argument("--legacy", action="store_true",
                        help="use resources/subscribe (2025 protocol era)")
    parser.add_argument("--recheck", type=float, default=60.0,
                        help="read the change after this many seconds without an update")
    args = parser.parse_args()
    key = os.environ.get("COLAFLOW_API_KEY")
    if not key:
        parser.error("set COLAFLOW_API_KEY (colaflow-mcp keys create --tenant SLUG)")
    return anyio.run(run, args.url, key, args.project, args.title, args.legacy,
                     args.expires, args.recheck)


if __name__ == "__main__":
    sys.exit(main())
