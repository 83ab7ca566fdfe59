"""An agent that proposes a ColaFlow change over MCP and waits for the human decision.

Uses the official MCP Python SDK (``pip install "mcp==2.3.*"``). It proposes an issue,
subscribes to the pending change and prints the outcome as soon as a reviewer decides; no
polling.

    export COLAFLOW_API_KEY=cola_...            # colaflow-mcp keys create --tenant acme
    python examples/mcp_agent.py --project WEB --title "Fix the login page"
    # in another terminal, as a reviewer:
    #   curl -X POST -H "Authorization: Bearer $REVIEWER_TOKEN" \\
    #        http://127.0.0.1:8000/api/mcp/pending-changes/<id>/approve

``--legacy`` uses the 2025 protocol era (``resources/subscribe`` and the session's GET
stream, as the TypeScript SDK and Claude Desktop do) instead of 2026-07-28's
``subscriptions/listen``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated


def http_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    """The HTTP client the SDK transport uses: our auth header, long reads for SSE."""
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))


def say(text: str) -> None:
    print(text, flush=True)


async def run(url: str, key: str, project: str, title: str, legacy: bool,
              expires: float | None) -> int:
    decided = anyio.Event()

    async def on_message(message: Any) -> None:
        # Legacy era: updates arrive as notifications on the session's GET stream.
        if isinstance(message, types.ResourceUpdatedNotification):
            decided.set()

    async with http_client({"Authorization": f"Bearer {key}"}) as http:
        client = Client(streamable_http_client(url, http_client=http),
                        mode="legacy" if legacy else "auto",
                        message_handler=on_message if legacy else None)
        async with client:
            arguments: dict[str, Any] = {"project_key": project, "title": title}
            if expires is not None:
                arguments["expires_in_seconds"] = expires
            result = await client.call_tool("create_issue", arguments)
            if result.is_error or result.structured_content is None:
                block = result.content[0] if result.content else None
                say("proposal refused: "
                    + (block.text if isinstance(block, types.TextContent) else str(result)))
                return 2
            proposal = result.structured_content
            uri = proposal["resourceUri"]
            say(f"proposed: {proposal['summary']}")
            say(f"pending change: {proposal['pendingChangeId']}  ({uri})")

            if legacy:
                with warnings.catch_warnings():  # deprecated only for 2026-era servers
                    warnings.simplefilter("ignore")
                    await client.session.subscribe_resource(uri)
                say("waiting for a reviewer (resources/subscribe) ...")
                await decided.wait()
            else:
                async with client.listen(resource_subscriptions=[uri]) as subscription:
                    say("waiting for a reviewer (subscriptions/listen) ...")
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            break

            read = await client.read_resource(uri)
            content = read.contents[0]
            assert isinstance(content, types.TextResourceContents)
            change = json.loads(content.text)

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
    args = parser.parse_args()
    key = os.environ.get("COLAFLOW_API_KEY")
    if not key:
        parser.error("set COLAFLOW_API_KEY (colaflow-mcp keys create --tenant SLUG)")
    return anyio.run(run, args.url, key, args.project, args.title, args.legacy, args.expires)


if __name__ == "__main__":
    sys.exit(main())
