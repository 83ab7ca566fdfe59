"""API keys and connection tokens that arrive in query strings never reach a log line."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from colaflow_mcp.logs import RedactingFilter, redact
from tests.procs import cli_env, serve


def test_redact_masks_keys_and_secret_parameters() -> None:
    key = "cola_" + "k" * 43
    line = f'GET /hubs/mcp?id=abc123&access_token={key} HTTP/1.1 Bearer {key}'
    out = redact(line)
    assert key not in out and "abc123" not in out
    assert "access_token=***" in out and "id=***" in out


def test_filter_rewrites_record_arguments() -> None:
    key = "cola_" + "q" * 43
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", f"/hubs/mcp?access_token={key}", "1.1",
                                200), None)
    RedactingFilter().filter(record)
    assert key not in record.getMessage()


def test_served_access_log_never_shows_keys_or_connection_tokens(tmp_path: Path) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    out = subprocess.run(["colaflow-mcp", "keys", "create", "--tenant", "acme", "--json"],
                         cwd=tmp_path, env=cli_env(env), capture_output=True, text=True,
                         check=True, timeout=60)
    key = json.loads(out.stdout)["key"]
    with serve(env, tmp_path) as server:
        base = server.base_url
        neg = httpx.post(f"{base}/hubs/mcp/negotiate?negotiateVersion=1&access_token={key}")
        assert neg.status_code == 200, neg.text
        token = neg.json()["connectionToken"]
        ws_url = base.replace("http", "ws") + f"/hubs/mcp?id={token}&access_token={key}"
        with connect(ws_url) as ws:
            ws.send('{"protocol":"json","version":1}\x1e')
            assert ws.recv(timeout=5) == "{}\x1e"
        bad = httpx.get(f"{base}/api/mcp/pending-changes?access_token={key}")
        assert bad.status_code == 401  # REST wants the key in a header
    log = server.output()  # complete: the process has exited and its output is drained
    assert "/hubs/mcp/negotiate" in log  # the access log is on, and redacted
    assert key not in log
    assert token not in log
    assert "access_token=***" in log


@pytest.mark.parametrize("secret", ["postgresql://u:hunter2@db/x"])
def test_database_password_is_masked_in_logs(secret: str) -> None:
    from colaflow_mcp.store.engine import redact_url

    assert "hunter2" not in redact_url(secret)


def test_log_level_names_levels_per_logger() -> None:
    from colaflow_mcp.logs import split_levels

    assert split_levels("info") == ("info", {})
    assert split_levels("WARNING, colaflow_mcp.supervisor=debug,uvicorn.access=error") == (
        "warning", {"colaflow_mcp.supervisor": "DEBUG", "uvicorn.access": "ERROR"})
