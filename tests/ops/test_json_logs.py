"""``COLAFLOW_LOG_FORMAT=json``: every line ``serve`` writes is one JSON object with time,
level, logger, message and the context known (tenant, change, hub connection); no API
key, reviewer token or connection token in any of them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from colaflow_mcp import logs
from colaflow_mcp.config import Settings
from tests.procs import cli_env, serve

HANDSHAKE = '{"protocol":"json","version":1}\x1e'


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run(["colaflow-mcp", *args], cwd=cwd, env=cli_env(env),
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_json_lines_carry_context_and_no_secret(tmp_path: Path) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}",
           "COLAFLOW_LOG_FORMAT": "json", "COLAFLOW_JWT_SECRET": "s3cret-" + "j" * 32}
    key = json.loads(_cli(env, tmp_path, "keys", "create", "--tenant", "acme",
                          "--json"))["key"]
    token = _cli(env, tmp_path, "token", "--tenant", "acme", "--user", "rita")
    _cli(env, tmp_path, "projects", "create", "--tenant", "acme", "--key", "WEB",
         "--name", "Website")
    with serve(env, tmp_path) as server:
        base = server.base_url
        agent = {"Authorization": f"Bearer {key}"}
        reviewer = {"Authorization": f"Bearer {token}"}
        change = httpx.post(f"{base}/api/mcp/pending-changes", headers=agent, json={
            "tool": "create_issue", "arguments": {"project_key": "WEB", "title": "Logs"}})
        assert change.status_code == 201, change.text
        cid = change.json()["id"]
        # Secrets where they do not belong: in query strings, which the access log shows.
        assert httpx.get(f"{base}/api/projects?access_token={key}").status_code == 401
        assert httpx.get(f"{base}/api/projects?token={token}").status_code == 401
        neg = httpx.post(f"{base}/hubs/mcp/negotiate?negotiateVersion=1&access_token={key}")
        connection = neg.json()
        ws_url = (base.replace("http", "ws")
                  + f"/hubs/mcp?id={connection['connectionToken']}&access_token={key}")
        with connect(ws_url) as ws:
            ws.send(HANDSHAKE)
            assert ws.recv(timeout=5) == "{}\x1e"
            # A protocol error: the hub logs it, in the connection's context.
            ws.send('{"type": 99}\x1e')
            ws.recv(timeout=5)
        approved = httpx.post(f"{base}/api/mcp/pending-changes/{cid}/approve",
                              headers=reviewer)
        assert approved.status_code == 200, approved.text
    output = server.output()
    for secret in (key, token, connection["connectionToken"], env["COLAFLOW_JWT_SECRET"]):
        assert secret not in output
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, output
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    approve_line = next(line for line in lines if line["logger"] == "uvicorn.access"
                        and f"/api/mcp/pending-changes/{cid}/approve" in line["message"])
    assert approve_line["tenant"] == "acme" and approve_line["changeId"] == cid
    hub_lines = [line for line in lines if line.get("connectionId")
                 == connection["connectionId"]]
    assert any(line["logger"].startswith("colaflow_mcp.hub") for line in hub_lines), lines
    assert all(line["tenant"] == "acme" for line in hub_lines)
    assert any("access_token=***" in line["message"] for line in lines)


def test_json_formatter_masks_secrets_in_tracebacks(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyaXRhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    key = "cola_" + "z" * 43
    record: Any = None
    try:
        raise ValueError(f"bad credential {key} / {jwt}")
    except ValueError:
        record = logging.LogRecord("colaflow_mcp.test", logging.ERROR, __file__, 1,
                                   "failed for %s", (key,), sys.exc_info())
    logs.RedactingFilter().filter(record)
    with logs.scope():
        logs.bind(tenant="acme", change_id="c-1")
        out = json.loads(logs.JsonFormatter().format(record))
    assert key not in json.dumps(out) and jwt not in json.dumps(out)
    assert out["message"] == "failed for cola_***"
    assert "ValueError" in out["exception"] and "eyJ***" in out["exception"]
    assert (out["tenant"], out["changeId"]) == ("acme", "c-1")
    assert "tenant" not in json.loads(logs.JsonFormatter().format(record))  # scope ended


def test_log_format_must_be_text_or_json() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        Settings.from_env({"COLAFLOW_LOG_FORMAT": "yaml"})
