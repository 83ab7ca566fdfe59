"""The console over plain HTTP: its JSON API (session cookie + CSRF), security headers,
cookie rules, the live stream's framing, and the login-link command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from colaflow_mcp.web.security import CSP
from tests.harness import Harness, fast_settings, live_server
from tests.web.console import login_url, signed_in_client

pytestmark = pytest.mark.anyio

ISSUE = {"project_key": "WEB", "title": "Fix the login page"}


async def _pending(h: Harness, tenant: str = "acme") -> tuple[str, dict[str, Any]]:
    await h.project(tenant)
    key = await h.agent_key(tenant, name="triage-bot")
    return key, await h.propose(key)


async def test_state_changes_without_the_csrf_token_are_refused(server: Harness) -> None:
    _, change = await _pending(server)
    async with signed_in_client(server) as (client, csrf):
        base = f"/inbox/api/changes/{change['id']}"
        for path, body in (("/approve", {}), ("/reject", {"reason": "no"})):
            missing = await client.post(base + path, json=body)
            wrong = await client.post(base + path, json=body,
                                      headers={"X-CSRF-Token": csrf[:-2] + "xx"})
            assert (missing.status_code, wrong.status_code) == (403, 403)
            assert missing.json()["error"] == "csrf"
        logout = await client.post("/inbox/logout", data={"csrf_token": "forged"})
        assert logout.status_code == 403
        still = await client.get(base)
        assert (still.status_code, still.json()["status"]) == (200, "Pending")


async def test_json_api_edit_answers_field_errors_and_approves_nothing(
        server: Harness) -> None:
    _, change = await _pending(server)
    async with signed_in_client(server) as (client, csrf):
        url = f"/inbox/api/changes/{change['id']}/approve"
        headers = {"X-CSRF-Token": csrf}
        bad = await client.post(url, headers=headers, json={"arguments": {
            "project_key": "WEB", "title": "", "priority": "Urgent", "colour": "red"}})
        assert bad.status_code == 400
        fields = bad.json()["fields"]
        assert set(fields) == {"title", "priority", "colour"}
        assert "at least 1 character" in fields["title"]
        assert "'Low', 'Medium', 'High' or 'Critical'" in fields["priority"]
        assert (await client.get(f"/inbox/api/changes/{change['id']}")).json()["status"] == \
            "Pending"

        good = await client.post(url, headers=headers, json={"arguments": {
            **ISSUE, "title": "Fix the SSO login page"}})
        assert good.status_code == 200
        body = good.json()
        assert (body["status"], body["edited"], body["editedBy"]) == ("Approved", True, "alice")
        assert body["executionResult"]["success"] is True

        again = await client.post(url, headers=headers, json={})
        assert again.status_code == 409
        assert again.json()["currentStatus"] == "Approved"
        assert "already Approved, decided elsewhere" in again.json()["message"]
        trail = (await client.get(f"/inbox/api/audit?changeId={change['id']}")).json()
        assert [e["action"] for e in trail["entries"]] == [
            "change.proposed", "change.approved", "change.executed"]


async def test_json_api_reject_needs_a_reason_and_lists_by_status(server: Harness) -> None:
    _, change = await _pending(server)
    async with signed_in_client(server) as (client, csrf):
        url = f"/inbox/api/changes/{change['id']}/reject"
        headers = {"X-CSRF-Token": csrf}
        assert (await client.post(url, headers=headers, json={"reason": " "})).status_code == 400
        assert (await client.post(url, headers=headers, content=b"[1]")).status_code == 400
        ok = await client.post(url, headers=headers, json={"reason": "duplicate"})
        assert (ok.status_code, ok.json()["decidedBy"]) == (200, "alice")
        listed = (await client.get("/inbox/api/changes?status=Rejected")).json()
        assert [c["id"] for c in listed["items"]] == [change["id"]]
        history = await client.get("/inbox/history")
        assert "duplicate" in history.text and "Rejected" in history.text
        for page in ("0", "abc", "1000001", "9" * 30):  # typed by hand: a page, not a 500
            beyond = await client.get(f"/inbox/history?page={page}")
            assert beyond.status_code == 200, (page, beyond.text)


async def test_another_tenants_change_looks_missing(server: Harness) -> None:
    _, change = await _pending(server, "acme")
    async with signed_in_client(server, "globex", "gina") as (client, csrf):
        assert (await client.get(f"/inbox/api/changes/{change['id']}")).status_code == 404
        r = await client.post(f"/inbox/api/changes/{change['id']}/reject",
                              headers={"X-CSRF-Token": csrf}, json={"reason": "mine now"})
        assert r.status_code == 404
        assert (await client.get("/inbox/api/changes")).json()["total"] == 0
        assert (await client.get("/inbox/api/audit")).json()["entries"] == []


async def test_every_console_answer_carries_the_security_headers(server: Harness) -> None:
    async with signed_in_client(server) as (client, _):
        answers = [await client.get(path) for path in (
            "/inbox", "/inbox/history", "/inbox/static/console.js",
            "/inbox/static/console.css", "/inbox/api/changes", "/inbox/changes/nope")]
        answers.append(await server.client.get("/inbox"))  # not signed in: 401 page
    for r in answers:
        assert r.headers["content-security-policy"] == CSP, r.url
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "unsafe-inline" not in CSP
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 404, 401]
    assert answers[0].headers["cache-control"] == "no-store"
    # Nothing inline: every script is the package's file.
    assert "<script>" not in answers[0].text and "style=" not in answers[0].text


async def test_cookie_is_secure_behind_an_https_proxy(server: Harness) -> None:
    link = await login_url(server)
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (its --forwarded-allow-ips default).
    r = await server.client.get(link.removeprefix(server.base_url),
                                headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and r.headers["location"] == "/inbox"
    cookie = r.headers["set-cookie"].lower()
    for flag in ("httponly", "samesite=strict", "secure", "path=/inbox"):
        assert flag in cookie
    plain = await server.client.get(
        (await login_url(server)).removeprefix(server.base_url))
    assert "secure" not in plain.headers["set-cookie"].lower()


async def test_live_stream_starts_with_the_snapshot_then_carries_events(
        server: Harness) -> None:
    key, change = await _pending(server)
    async with signed_in_client(server) as (client, _), \
            client.stream("GET", "/inbox/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers.get_list("cache-control") == ["no-store"]  # once
        assert stream.headers["x-accel-buffering"] == "no"
        lines = stream.aiter_lines()

        async def next_event() -> tuple[str, Any]:
            name = None
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name:
                        return name, json.loads(line[6:])
            raise AssertionError("stream ended")

        name, data = await next_event()
        assert name == "snapshot" and [c["id"] for c in data["pending"]] == [change["id"]]
        new = await server.propose(key)
        assert await next_event() == ("PendingChangeCreated", new | {})
        token = await server.reviewer_token()
        assert (await server.reject(token, new["id"], "no")).status_code == 200
        name, data = await next_event()
        assert (name, data["pendingChangeId"], data["rejectedBy"]) == (
            "PendingChangeRejected", new["id"], "alice")


def test_login_link_command_prints_a_working_one_time_url(tmp_path: Path) -> None:
    env_db = f"sqlite:///{tmp_path / 'cli.db'}"
    cmd = [sys.executable, "-m", "colaflow_mcp.cli", "--database-url", env_db, "login-link",
           "--tenant", "acme", "--user", "alice", "--base-url", "https://review.example.com/",
           "--ttl-minutes", "5", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["url"].startswith("https://review.example.com/inbox/login?token=")
    token = out["url"].split("token=")[1]
    assert len(token) >= 40 and token not in done.stderr
    import sqlite3
    with sqlite3.connect(tmp_path / "cli.db") as db:
        stored = db.execute("SELECT token_hash, user FROM console_login_link").fetchall()
    assert len(stored) == 1 and stored[0][1] == "alice" and token not in stored[0][0]
    bad = subprocess.run([*cmd[:-5], "--ttl-minutes", "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "positive number of minutes" in bad.stderr


async def test_a_link_from_the_command_signs_in_on_the_server(server: Harness) -> None:
    url = await login_url(server)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        first = await client.get(url.removeprefix(server.base_url))
        second = await client.get(url.removeprefix(server.base_url))
    assert (first.status_code, second.status_code) == (303, 403)
    assert "token" not in first.headers["location"]


async def test_a_head_request_does_not_use_the_link_up(server: Harness) -> None:
    url = (await login_url(server)).removeprefix(server.base_url)
    head = await server.client.head(url)
    assert head.status_code == 200 and "set-cookie" not in head.headers
    opened = await server.client.get(url)
    assert opened.status_code == 303 and "set-cookie" in opened.headers


async def test_a_page_too_far_behind_is_cut_off_to_resync() -> None:
    from colaflow_mcp.delivery.events import DecisionEvent
    from colaflow_mcp.web.live import QueueStream

    stream = QueueStream("tenant", size=2)
    events = [DecisionEvent(f"c{i}", "tenant", "Pending", {}) for i in range(3)]
    for event in events:
        stream.deliver(event)  # the third does not fit: the stream ends instead of growing
    got = [await stream.receive.receive(), await stream.receive.receive()]
    assert got == events[:2]
    with pytest.raises(anyio.EndOfStream):
        await stream.receive.receive()


async def test_live_stream_ends_when_the_session_is_logged_out(database_url: str) -> None:
    settings = fast_settings(database_url, console_keepalive_seconds=0.2)
    async with live_server(settings) as h, signed_in_client(h) as (client, csrf), \
            client.stream("GET", "/inbox/api/events") as stream:
        async with httpx.AsyncClient(base_url=h.base_url, cookies=client.cookies) as other:
            out = await other.post("/inbox/logout", data={"csrf_token": csrf})
            assert out.status_code == 200
        with anyio.fail_after(10):
            lines = [line async for line in stream.aiter_lines()]
    assert "event: signedOut" in lines
