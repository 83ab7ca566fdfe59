"""Property: no MCP tool call, however malformed its arguments, and no garbage JSON-RPC body
gets an internal error, logs an error, hurts /health or changes a stored decision.

In-process (the SDK's client over httpx2's ASGI transport): ten times faster than a socket,
and an exception in the app reaches the test as itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from colaflow_mcp.store.tables import PendingChange
from tests.fuzz import (
    EDGE_INTS,
    EDGE_NUMBERS,
    HUGE_INTS,
    JSON_VALUES,
    PLAUSIBLE,
    SCALARS,
    Decision,
    Seed,
    assert_sound,
    decisions,
    dumps,
    fuzz_settings,
    seed,
)
from tests.harness import Harness, fast_settings, in_process

pytestmark = pytest.mark.anyio
LEGACY = "2025-11-25"
MCP_URL = "http://127.0.0.1/mcp"  # a loopback Host, as MCP's DNS-rebinding check wants
ACCEPT = "application/json, text/event-stream"
# A valid call of each tool; examples replace or add an argument or two.
VALID: dict[str, dict[str, Any]] = {
    "create_project": {"key": "NEW", "name": "New"},
    "create_issue": {"project_key": "WEB", "title": "Fix it"},
    "update_issue": {"issue_key": "WEB-1", "title": "Renamed"},
    "update_status": {"issue_key": "WEB-1", "status": "Done"},
    "add_comment": {"issue_key": "WEB-1", "body": "Looks good"},
    "delete_issue": {"issue_key": "WEB-1"},
    "get_pending_change": {"pending_change_id": "pending:0"},
    "list_pending_changes": {},
    "list_projects": {},
    "get_issue": {"issue_key": "WEB-1"},
}
# Every parameter of every tool (checked against the live schemas below).
PARAMS: dict[str, list[str]] = {
    "create_project": ["key", "name", "description", "expires_in_seconds", "rationale"],
    "create_issue": ["project_key", "title", "description", "type", "priority", "assignee",
                     "expires_in_seconds", "rationale"],
    "update_issue": ["issue_key", "title", "description", "type", "priority", "assignee",
                     "expires_in_seconds", "rationale"],
    "update_status": ["issue_key", "status", "expires_in_seconds", "rationale"],
    "add_comment": ["issue_key", "body", "author", "expires_in_seconds", "rationale"],
    "delete_issue": ["issue_key", "expires_in_seconds", "rationale"],
    "get_pending_change": ["pending_change_id"],
    "list_pending_changes": ["status", "page", "page_size"],
    "list_projects": [],
    "get_issue": ["issue_key"],
}
ID_REFS = ["pending:0", "pending:1", "decided:0", "decided:1", "foreign:0", "foreign:1"]


@dataclass
class Env:
    h: Harness
    seed: Seed
    before: dict[str, Decision]
    client: Client
    session: dict[str, str]  # headers of a raw legacy session


async def _raw_session(h: Harness, key: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Accept": ACCEPT,
               "MCP-Protocol-Version": LEGACY}
    r = await h.client.post(MCP_URL, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"}}})
    headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    await h.client.post(MCP_URL, headers=headers,
                        json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    async with in_process(fast_settings(database_url)) as h:
        s = await seed(h.runtime)
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=h.app),
            headers={"Authorization": f"Bearer {s.agent_key}"},
        ) as http, Client(streamable_http_client(MCP_URL, http_client=http), cache=None
                          ) as client:
            yield Env(h, s, await decisions(h.runtime), client,
                      await _raw_session(h, s.agent_key))


def fill(value: Any, s: Seed) -> Any:
    """Seeded ids for their stand-ins, anywhere in a drawn value."""
    if isinstance(value, str) and value in ID_REFS:
        group, _, index = value.partition(":")
        return getattr(s, group)[int(index)]
    if isinstance(value, dict):
        return {k: fill(v, s) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, s) for v in value]
    return value


def values() -> st.SearchStrategy[Any]:
    return st.one_of(PLAUSIBLE, st.sampled_from(ID_REFS), EDGE_INTS, EDGE_NUMBERS, SCALARS,
                     JSON_VALUES)


def calls() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A tool (now and then a made-up one) with valid arguments, one or two of them replaced
    by odd values, one dropped, or an unknown one added."""
    def with_odd(tool: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        names = st.sampled_from(PARAMS[tool]) if PARAMS[tool] else st.text(max_size=10)
        odd = st.dictionaries(st.one_of(names, names, names, st.text(max_size=10)), values(),
                              max_size=2)
        return st.builds(lambda o, drop: (tool, _merge(VALID[tool], o, drop)), odd,
                         st.booleans())

    made_up = st.builds(lambda name, args: (name, args), st.text(max_size=20),
                        st.dictionaries(st.text(max_size=10), values(), max_size=2))
    return st.one_of(st.sampled_from(sorted(VALID)).flatmap(with_odd), made_up)


def _merge(valid: dict[str, Any], odd: dict[str, Any], drop: bool) -> dict[str, Any]:
    args = {**valid, **odd}
    if drop and valid:
        args.pop(sorted(valid)[0], None)
    return args


async def check(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await assert_sound(env.h.client, env.h.runtime, env.before, caplog)


async def test_the_fuzzed_parameters_are_the_tools_parameters(env: Env) -> None:
    tools = (await env.client.list_tools()).tools
    assert {t.name: sorted(t.input_schema["properties"]) for t in tools} == {
        name: sorted(params) for name, params in PARAMS.items()}


async def tool_result(env: Env, name: str, arguments: dict[str, Any]
                      ) -> types.CallToolResult | None:
    """The call's result (a tool error included); None when refused at the protocol level
    (never an internal error). Error texts carry no traceback and no secret."""
    try:
        result = await env.client.call_tool(name, fill(arguments, env.seed))
    except MCPError as exc:
        assert exc.error.code != types.INTERNAL_ERROR, exc.error
        return None
    if result.is_error:
        text = result.content[0]
        assert isinstance(text, types.TextContent) and text.text
        assert "Traceback" not in text.text
        assert not any(secret in text.text for secret in env.seed.secrets)
    return result


PAGING = st.one_of(st.integers(1, 100), HUGE_INTS, st.integers(max_value=0), EDGE_NUMBERS,
                   SCALARS)
PAGE_ARGS = st.builds(
    lambda page, size: {"page": page} | ({} if size is None else {"page_size": size}),
    PAGING, st.one_of(st.none(), st.integers(1, 100), PAGING))


@fuzz_settings(60)
@given(args=st.one_of(PAGE_ARGS, PAGE_ARGS.map(lambda a: {"page_size": a["page"]})))
async def test_any_paging_of_list_pending_changes_is_answered_or_refused(
    env: Env, caplog: pytest.LogCaptureFixture, args: dict[str, Any]
) -> None:
    result = await tool_result(env, "list_pending_changes", args)
    if result is not None and not result.is_error:
        assert result.structured_content is not None
        assert len(result.structured_content["items"]) <= result.structured_content["pageSize"]
    await check(env, caplog)


@fuzz_settings(40)
@given(expiry=st.one_of(EDGE_INTS, EDGE_NUMBERS, SCALARS))
async def test_any_expiry_is_honoured_within_the_ttl_or_refused(
    env: Env, caplog: pytest.LogCaptureFixture, expiry: Any
) -> None:
    result = await tool_result(env, "create_issue", {**VALID["create_issue"],
                                                     "expires_in_seconds": expiry})
    if result is not None and not result.is_error:
        assert not isinstance(expiry, bool)  # true is not one second
        assert result.structured_content is not None
        async with env.h.runtime.db.read() as s:
            row = await s.get(PendingChange, result.structured_content["pendingChangeId"])
        assert row is not None
        window = (row.expires_at - row.created_at).total_seconds()
        assert 0 <= window <= env.h.settings.pending_change_ttl_seconds
    await check(env, caplog)


@fuzz_settings(60)
@given(call=calls())
async def test_tool_calls_with_garbage_arguments_get_tool_errors_not_internal_errors(
    env: Env, caplog: pytest.LogCaptureFixture, call: tuple[str, dict[str, Any]]
) -> None:
    await tool_result(env, *call)
    await check(env, caplog)


def rpc_bodies() -> st.SearchStrategy[bytes]:
    """JSON-RPC envelopes with odd methods, ids and params (NaN literals included), and
    bytes that are not JSON-RPC at all."""
    methods = st.one_of(st.sampled_from(["tools/call", "tools/list", "resources/read",
                                         "resources/subscribe", "resources/unsubscribe",
                                         "resources/templates/list", "ping"]),
                        st.text(max_size=20))
    tool_params = calls().map(lambda c: {"name": c[0], "arguments": c[1]})
    uri = st.one_of(st.sampled_from(["colaflow://pending-changes/pending:0",
                                     "colaflow://projects", "colaflow://issues/WEB-1"]),
                    st.text(max_size=40))
    params = st.one_of(tool_params, st.fixed_dictionaries({"uri": uri}), JSON_VALUES)
    envelope = st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]), "method": methods},
        optional={"id": st.one_of(st.integers(), st.text(max_size=8), SCALARS),
                  "params": params})
    nested = st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
    return st.one_of(envelope.map(lambda e: dumps(e).encode()), st.binary(max_size=200),
                     JSON_VALUES.map(lambda v: dumps(v).encode()), nested)


@fuzz_settings(60)
@given(body=rpc_bodies())
async def test_garbage_json_rpc_gets_client_errors_not_internal_errors(
    env: Env, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    for ref in ID_REFS:  # stand-ins inside URIs and arguments
        body = body.replace(ref.encode(), fill(ref, env.seed).encode())
    r = await env.h.client.post(MCP_URL, content=body, headers={
        **env.session, "Content-Type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:500])
    for message in _messages(r):
        error = message.get("error") if isinstance(message, dict) else None
        assert not (isinstance(error, dict) and error.get("code") == types.INTERNAL_ERROR), error
    await check(env, caplog)


def _messages(r: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a response, plain JSON or SSE."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        # Not splitlines(): JSON may hold U+2028 and friends unescaped; SSE lines end at \n.
        lines = (line.rstrip("\r") for line in r.text.split("\n"))
        return [json.loads(line[5:]) for line in lines
                if line.startswith("data:") and line[5:].strip()]
    if r.headers.get("content-type", "").startswith("application/json") and r.content:
        return [r.json()]
    return []
