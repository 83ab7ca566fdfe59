"""Instance tags: hub connection tokens and MCP session ids name the instance holding them,
so a load balancer can route every later request of a connection or session by its tag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from colaflow_mcp.config import Settings
from tests.harness import fast_settings, live_server
from tests.procs import VENV_BIN, cli_env

pytestmark = pytest.mark.anyio

LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


async def test_hub_connection_tokens_and_ids_carry_the_instance_tag(database_url: str) -> None:
    async with live_server(fast_settings(database_url, instance_tag="blue-2")) as h:
        key = await h.agent_key()
        auth = {"Authorization": f"Bearer {key}"}
        v1 = (await h.client.post("/hubs/mcp/negotiate?negotiateVersion=1", headers=auth)).json()
        v0 = (await h.client.post("/hubs/mcp/negotiate", headers=auth)).json()
        # The part after the tag is as random as before (32 bytes, URL-safe).
        assert re.fullmatch(r"blue-2\.[A-Za-z0-9_-]{43}", v1["connectionToken"])
        assert v1["connectionId"].startswith("blue-2.")
        assert v0["connectionId"].startswith("blue-2.")  # version 0 sends it as the id
        # The tagged token is what the transport requests carry, and it works.
        r = await h.client.get(f"/hubs/mcp?id={v1['connectionToken']}", headers=auth)
        assert r.status_code == 200
        untagged = v1["connectionToken"].split(".", 1)[1]
        r = await h.client.get(f"/hubs/mcp?id={untagged}", headers=auth)
        assert r.status_code == 404


async def test_mcp_session_ids_carry_the_instance_tag(database_url: str) -> None:
    async with live_server(fast_settings(database_url, instance_tag="b")) as h:
        key = await h.agent_key()
        headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT,
                   "MCP-Protocol-Version": LEGACY}
        r = await h.client.post("/mcp", json=INIT, headers=headers)
        assert r.status_code == 200, r.text
        session = r.headers["mcp-session-id"]
        assert re.fullmatch(r"b\.[0-9a-f]{32}", session)
        headers["Mcp-Session-Id"] = session
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "method":
                                              "notifications/initialized"}, headers=headers)
        assert r.status_code == 202, r.text
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method":
                                              "tools/list"}, headers=headers)
        assert r.status_code == 200 and "create_issue" in r.text
        # The session is known by its tagged id only.
        headers["Mcp-Session-Id"] = session.split(".", 1)[1]
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method":
                                              "tools/list"}, headers=headers)
        assert r.status_code == 404
        # Ending the session by its tagged id ends it (the SDK's tables were renamed).
        headers["Mcp-Session-Id"] = session
        assert (await h.client.delete("/mcp", headers=headers)).status_code == 200
        r = await h.client.post("/mcp", json={"jsonrpc": "2.0", "id": 4, "method":
                                              "tools/list"}, headers=headers)
        assert r.status_code == 404


def test_default_tag_is_the_instance_id() -> None:
    assert Settings(instance_id="web-1").tagged("x") == "web-1.x"
    # An instance id that is not a valid tag is hashed into one (stable across restarts).
    odd = Settings(instance_id="host.example:8001")
    assert re.fullmatch(r"[0-9a-f]{12}\.x", odd.tagged("x"))
    assert odd.tagged("x") == Settings(instance_id="host.example:8001").tagged("x")
    assert Settings(instance_id="web-1", instance_tag="a").tagged("x") == "a.x"


@pytest.mark.parametrize("tag", ["a.b", "a b", "x" * 33, "ä"])
def test_an_invalid_instance_tag_stops_serve_with_a_clear_error(tag: str, tmp_path: Path
                                                                ) -> None:
    out = subprocess.run([f"{VENV_BIN}/colaflow-mcp", "serve", "--port", "1"], cwd=tmp_path,
                         env=cli_env({"COLAFLOW_INSTANCE_TAG": tag}), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "COLAFLOW_INSTANCE_TAG" in out.stderr and "letters, digits" in out.stderr
