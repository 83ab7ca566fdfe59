"""Code in docs/mcp.md runs as written against a live server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anyio
import pytest

from tests.harness import IN_CI, Harness
from tests.mcp.nodeproc import ROOT, run_process

pytestmark = pytest.mark.anyio


def snippet(name: str) -> str:
    """The fenced code between ``<!-- snippet:NAME -->`` and ``<!-- /snippet -->``."""
    text = (ROOT / "docs" / "mcp.md").read_text()
    block = text.split(f"<!-- snippet:{name} -->", 1)[1].split("<!-- /snippet -->", 1)[0]
    lines = block.strip().splitlines()
    assert lines[0].startswith("```") and lines[-1] == "```", block
    return "\n".join(lines[1:-1]) + "\n"


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        message = f"{name} is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: it must be)")
        pytest.skip(message)


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_the_fastmcp_snippet_reports_the_decision(server: Harness, tmp_path: Path,
                                                        era: str) -> None:
    # In a process of its own: importing fastmcp reconfigures logging.
    require_module("fastmcp")
    script = tmp_path / "fastmcp_agent.py"
    script.write_text(snippet("fastmcp"))
    await server.project()
    key, token = await server.agent_key(), await server.reviewer_token()
    argv = [sys.executable, "-W", "error", str(script)]
    if era == "legacy":
        argv.append("--legacy")
    env = {"COLAFLOW_API_KEY": key, "COLAFLOW_MCP_URL": f"{server.base_url}/mcp"}
    async with run_process(argv, tmp_path, env) as proc:
        with anyio.fail_after(30):
            uri = await proc.line_starting("waiting for a reviewer:")
            r = await server.reject(token, uri.rsplit("/", 1)[1], "not now")
            assert r.status_code == 200, r.text
            decision = await proc.line_starting("decision:")
    assert decision == "Rejected not now"
