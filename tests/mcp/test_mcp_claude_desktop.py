"""Claude Desktop's path: the shipped config, run through mcp-remote (stdio <-> Streamable HTTP).

The test reads ``claude_desktop_config.example.json``, runs its command the way Claude
Desktop would (with the locally installed ``mcp-remote`` instead of ``npx`` fetching it, and
the live server's URL), and drives it with the Python SDK over stdio.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from tests.harness import Harness
from tests.mcp.mcpenv import Updates, read_json, subscribe
from tests.mcp.nodeproc import ROOT, require_node_package

pytestmark = [pytest.mark.anyio, pytest.mark.node]
JS = ROOT / "tests" / "js"


def _server_params(url: str, key: str, node: str, home: Path) -> StdioServerParameters:
    config = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    entry: dict[str, Any] = config["mcpServers"]["colaflow"]
    assert entry["command"] == "npx"
    args: list[str] = list(entry["args"])
    package = next(a for a in args if a.startswith("mcp-remote"))
    rest = args[args.index(package) + 1:]
    rest = [url if a.startswith("http://") else a for a in rest]
    env = {k: v.replace("cola_REPLACE_WITH_YOUR_API_KEY", key)
           for k, v in entry["env"].items()}
    binary = JS / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
    return StdioServerParameters(
        command=node, args=[str(binary), *rest],
        # HOME: mcp-remote keeps an auth cache there; keep it inside the test's tmp dir.
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), **env},
        cwd=str(JS),
    )


async def test_claude_desktop_config_via_mcp_remote_gets_the_decision(
    server: Harness, tmp_path: Path
) -> None:
    node = require_node_package(JS, "mcp-remote")
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    params = _server_params(f"{server.base_url}/mcp", key, node, tmp_path)
    updates = Updates()
    with anyio.fail_after(60):
        async with Client(params, mode="legacy", message_handler=updates.handler,
                          cache=None) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"create_issue", "get_pending_change"} <= tools
            result = await client.call_tool("create_issue",
                                            {"project_key": "WEB", "title": "From Claude"})
            assert result.structured_content is not None, result.content
            uri = result.structured_content["resourceUri"]
            await subscribe(client, uri)
            r = await server.reject(token, result.structured_content["pendingChangeId"],
                                    "please add steps to reproduce")
            assert r.status_code == 200, r.text
            await updates.wait_for(uri)
            change = await read_json(client, uri)
    assert updates.uris == [uri]
    assert change["status"] == "Rejected"
    assert change["reason"] == "please add steps to reproduce"
    assert isinstance(result.content[0], types.TextContent)
