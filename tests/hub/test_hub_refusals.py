"""Refused hub requests: plain HTTP answers that say why, a cap on connections per key, and
no ERROR in the server's log for a normal refusal."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from hubenv import HubEnv, ServerFactory
from hubwire import open_ws
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.procs import cli_env, serve

RS = "\x1e"


def refused(url: str) -> tuple[int, str]:
    """Open a WebSocket that the server must refuse; its HTTP status and body."""
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=5)
    response = info.value.response
    return response.status_code, response.body.decode() if response.body else ""


def test_refused_upgrades_are_http_answers_and_log_no_error(tmp_path: Path) -> None:
    env = {"COLAFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'refusals.db'}",
           "COLAFLOW_HUB_MAX_CONNECTIONS_PER_KEY": "1"}
    out = subprocess.run(["colaflow-mcp", "keys", "create", "--tenant", "acme", "--json"],
                         cwd=tmp_path, env=cli_env(env), capture_output=True, text=True,
                         check=True, timeout=60)
    key = json.loads(out.stdout)["key"]
    with serve(env, tmp_path) as server:
        with server.new_output:  # "startup complete" comes before the socket listens
            assert server.new_output.wait_for(
                lambda: "Uvicorn running on" in server.output(), timeout=30), server.output()
        hub = server.base_url.replace("http", "ws") + "/hubs/mcp"
        assert refused(hub) == (401, "Unauthorized")
        assert refused(f"{hub}?id=nope&access_token={key}") == (404, "No Connection with that ID")
        neg = httpx.post(f"{server.base_url}/hubs/mcp/negotiate?negotiateVersion=1",
                         headers={"Authorization": f"Bearer {key}"})
        token = neg.json()["connectionToken"]
        with connect(f"{hub}?id={token}&access_token={key}") as ws:
            ws.send('{"protocol":"json","version":1}' + RS)
            assert ws.recv(timeout=5) == "{}" + RS
            status, body = refused(f"{hub}?id={token}&access_token={key}")
            assert status == 409 and "already has a transport" in body
            # The key's one connection is live: no other, by WebSocket or negotiate.
            status, body = refused(f"{hub}?access_token={key}")
            assert status == 429 and "Too many hub connections for this API key" in body
            again = httpx.post(f"{server.base_url}/hubs/mcp/negotiate?access_token={key}")
            assert again.status_code == 429 and again.text == body
    log = server.output()  # complete: the process has exited and its output is drained
    lines = log.splitlines()
    for status in (401, 404, 409, 429):  # uvicorn logged each refusal, at INFO
        assert any('"WebSocket /hubs/mcp' in line and line.endswith(f'" {status}')
                   and " INFO " in line for line in lines), log
    assert "without completing handshake" not in log
    assert [line for line in lines if "ERROR" in line] == []
    assert key not in log


@pytest.mark.anyio
async def test_connections_per_key_and_per_reviewer_are_capped(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(hub_max_connections_per_key=2) as env:
        t = await env.tenant("acme")
        first, _second = await open_ws(env.ws_url, t.key), await open_ws(env.ws_url, t.key)
        with pytest.raises(InvalidStatus) as info:
            await open_ws(env.ws_url, t.key, handshake=False)
        assert info.value.response.status_code == 429
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1",
                                headers={"Authorization": f"Bearer {t.key}"})
            assert r.status_code == 429
            assert "Too many hub connections for this API key (limit 2)" in r.text
            # Another key and the tenant's reviewer have caps of their own.
            other = await env.tenant("bolt")
            await open_ws(env.ws_url, other.key)
            reviewer = [await open_ws(env.ws_url, t.token) for _ in range(2)]
            with pytest.raises(InvalidStatus) as info:
                await open_ws(env.ws_url, t.token, handshake=False)
            assert info.value.response.status_code == 429
            assert b"for this reviewer" in (info.value.response.body or b"")
            # A closed connection frees its place.
            conn = next(c for c in env.hub.connections.values()
                        if c.principal.api_key_id == t.key_id)  # the first one opened
            await first.ws.close()
            with anyio.fail_after(5):
                await conn.closed_event.wait()
            r = await http.post(f"{env.hub_url}/negotiate?negotiateVersion=1",
                                headers={"Authorization": f"Bearer {t.key}"})
            assert r.status_code == 200
            assert len(reviewer) == 2


@pytest.mark.anyio
async def test_a_refusal_during_shutdown_is_a_503_without_an_error(
    env: HubEnv, caplog: pytest.LogCaptureFixture,
) -> None:
    t = await env.tenant("acme")
    env.hub.registry.closing = True  # what HubServer.shutdown sets first
    with caplog.at_level(logging.INFO), pytest.raises(InvalidStatus) as info:
        await open_ws(env.ws_url, t.key, handshake=False)
    assert info.value.response.status_code == 503
    assert info.value.response.body == b"Server is shutting down"
    env.hub.registry.closing = False
    await open_ws(env.ws_url, t.key)  # served after the refusal: its log is complete
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
