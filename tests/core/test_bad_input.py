"""Bad input gets a clear 4xx with the error shape, never a 500 or a logged traceback."""

from __future__ import annotations

import logging

import pytest

from tests.harness import Harness
from tests.mcp.mcpenv import mcp_client

pytestmark = pytest.mark.anyio
BASE = "/api/mcp/pending-changes"
ISSUE = '{"project_key": "WEB", "title": "Fix login"}'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def total_changes(h: Harness, key: str) -> int:
    r = await h.client.get(BASE, headers=bearer(key))
    assert r.status_code == 200
    total: int = r.json()["total"]
    return total


@pytest.mark.parametrize("expires", ["NaN", "Infinity", "-Infinity", "true", "false", '"10"',
                                     "0", "-5", "1e400"])
async def test_expiry_that_is_not_a_positive_finite_number_gets_400(
    app_harness: Harness, caplog: pytest.LogCaptureFixture, expires: str
) -> None:
    h = app_harness
    await h.project()
    key = await h.agent_key()
    body = f'{{"tool": "create_issue", "arguments": {ISSUE}, "expiresInSeconds": {expires}}}'
    r = await h.client.post(BASE, content=body, headers={
        **bearer(key), "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and r.json()["message"]
    assert await total_changes(h, key) == 0
    no_errors_logged(caplog)


async def test_deeply_nested_json_gets_400_on_every_route_that_reads_json(
    app_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = app_harness
    await h.project()
    key, token = await h.agent_key(), await h.reviewer_token()
    change = await h.propose(key)
    deep = '{"tool": "create_issue", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for path, credential in ((BASE, key), (f"{BASE}/{change['id']}/reject", token)):
        r = await h.client.post(path, content=deep, headers={
            **bearer(credential), "Content-Type": "application/json"})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "invalid_request" and "JSON" in r.json()["message"]
    assert (await h.client.get(f"{BASE}/{change['id']}", headers=bearer(key))
            ).json()["status"] == "Pending"
    no_errors_logged(caplog)


@pytest.mark.parametrize("param", ["page", "pageSize"])
@pytest.mark.parametrize("value", ["9223372036854775807", "9223372036854775808", "1" + "0" * 30,
                                   "0", "-1", "1.5", "x", "9" * 5000])
async def test_out_of_range_paging_gets_400_for_agents_and_reviewers(
    harness: Harness, caplog: pytest.LogCaptureFixture, param: str, value: str
) -> None:
    for credential in (await harness.agent_key(), await harness.reviewer_token()):
        r = await harness.client.get(BASE, params={param: value}, headers=bearer(credential))
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request" and param in r.json()["message"]
    no_errors_logged(caplog)


async def test_the_largest_allowed_page_is_answered_empty(app_harness: Harness) -> None:
    key = await app_harness.agent_key()
    r = await app_harness.client.get(BASE, params={"page": "1000000", "pageSize": "100"},
                                     headers=bearer(key))
    assert r.status_code == 200 and r.json()["items"] == []


async def test_mcp_list_pending_changes_with_a_huge_page_is_a_clear_tool_error(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    key = await server.agent_key()
    async with mcp_client(server, key) as client:
        for args in ({"page": 9223372036854775807}, {"page_size": 9223372036854775807},
                     {"page": 2**70}, {"page": 0}):
            result = await client.call_tool("list_pending_changes", args)
            assert result.is_error, args
            text = result.content[0].text  # type: ignore[union-attr]
            assert "page" in text.lower() and "Traceback" not in text
        ok = await client.call_tool("list_pending_changes", {"page": 2})
        assert not ok.is_error
    no_errors_logged(caplog)


async def test_mcp_boolean_expiry_is_refused_and_null_means_not_given(server: Harness) -> None:
    await server.project()
    async with mcp_client(server, await server.agent_key()) as client:
        result = await client.call_tool("create_issue", {
            "project_key": "WEB", "title": "x", "expires_in_seconds": True})
        assert result.is_error
        listed = await client.call_tool("list_pending_changes", {})
        assert listed.structured_content is not None
        assert listed.structured_content["total"] == 0
        result = await client.call_tool("create_issue", {
            "project_key": "WEB", "title": "x", "expires_in_seconds": None})
        assert not result.is_error, result.content
        schema = {t.name: t for t in (await client.list_tools()).tools}[
            "create_issue"].input_schema["properties"]["expires_in_seconds"]
    assert {"type": "number", "exclusiveMinimum": 0} in schema["anyOf"]


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_gets_413(app_harness: Harness, chunked: bool) -> None:
    h = app_harness
    await h.project()
    key = await h.agent_key()
    limit = h.settings.max_body_bytes
    payload = ('{"tool": "create_issue", "arguments": {"project_key": "WEB", "title": "'
               + "x" * limit + '"}}').encode()

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: streamed
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    r = await h.client.post(BASE, content=chunks() if chunked else payload,
                            headers={**bearer(key), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large" and str(limit) in r.json()["message"]
    assert await total_changes(h, key) == 0


async def test_x_api_key_accepts_only_api_keys_on_rest(app_harness: Harness) -> None:
    h = app_harness
    token, key = await h.reviewer_token(), await h.agent_key()
    r = await h.client.get(BASE, headers={"X-API-Key": token})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and "API key" in r.json()["message"]
    assert token not in r.text
    assert (await h.client.get(BASE, headers=bearer(token))).status_code == 200
    assert (await h.client.get(BASE, headers={"X-API-Key": key})).status_code == 200


async def test_x_api_key_accepts_only_api_keys_on_mcp(server: Harness) -> None:
    token = await server.reviewer_token()
    for headers in ({"X-API-Key": token}, bearer(token)):
        r = await server.client.post(
            "/mcp", headers={**headers, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_mcp_endpoint_refuses_deeply_nested_json_without_logging_an_error(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    key = await server.agent_key()
    deep = ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": '
            '"list_projects", "arguments": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}}")
    r = await server.client.post("/mcp", content=deep, headers={
        **bearer(key), "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700, r.text
    assert (await server.client.get("/health")).json()["status"] == "ok"
    no_errors_logged(caplog)
