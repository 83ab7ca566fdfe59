"""Tools and resources as an agent sees them: schemas, structured proposals, clear errors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from colaflow_mcp.domain.representation import Proposal
from tests.harness import Harness
from tests.mcp.mcpenv import Mode, mcp_client, propose_issue, read_json

pytestmark = pytest.mark.anyio
MODES = pytest.mark.parametrize("mode", ["legacy", "modern"])

PROPOSING = ["create_project", "create_issue", "update_issue", "update_status", "add_comment",
             "delete_issue"]
READING = ["get_pending_change", "list_pending_changes", "list_projects", "get_issue"]


async def _key(h: Harness) -> str:
    await h.project()
    return await h.agent_key()


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@MODES
async def test_tools_are_exactly_the_contract_with_described_inputs(server: Harness, mode: Mode
                                                                    ) -> None:
    async with mcp_client(server, await _key(server), mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == sorted(PROPOSING + READING)
    for name in PROPOSING:
        tool = tools[name]
        assert tool.description and "approve" in tool.description.lower()
        props = tool.input_schema["properties"]
        assert "expires_in_seconds" in props
        assert all(p.get("description") for p in props.values()), name
        assert tool.output_schema is not None
        assert {"pendingChangeId", "status", "resourceUri", "expiresAt", "diff"} <= set(
            tool.output_schema["properties"])
        assert tool.annotations is not None and tool.annotations.read_only_hint is False
    status = tools["update_status"].input_schema["properties"]["status"]
    assert status["enum"] == ["ToDo", "InProgress", "InReview", "Done", "Blocked"]
    for name in READING:
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True


@MODES
async def test_proposing_returns_structured_content_and_a_summary_and_changes_nothing(
    server: Harness, mode: Mode
) -> None:
    async with mcp_client(server, await _key(server), mode) as client:
        result = await client.call_tool(
            "create_issue", {"project_key": "web", "title": "Login fails", "type": "Bug",
                             "priority": "High"})
        assert not result.is_error
        data: dict[str, Any] = dict(result.structured_content or {})
        text = _text(result)
        projects = await client.call_tool("list_projects", {})
    assert data["status"] == "Pending"
    # Exactly the advertised output schema's fields, as the model would dump them.
    assert data == Proposal.model_validate(data).model_dump(mode="json")
    assert set(data) == set(Proposal.model_fields) and data["summary"] in text
    assert data["resourceUri"] == f"colaflow://pending-changes/{data['pendingChangeId']}"
    assert data["expiresAt"].endswith("Z")
    assert data["diff"]["after"]["title"] == "Login fails"
    assert data["diff"]["operation"] == "Create"
    assert "\n" not in text and data["pendingChangeId"] in text and data["resourceUri"] in text
    assert projects.structured_content is not None
    assert projects.structured_content["projects"][0]["issueCount"] == 0


async def test_expiry_is_capped_by_the_server_ttl(server: Harness) -> None:
    key = await _key(server)
    async with mcp_client(server, key) as client:
        short = await propose_issue(client, expires_in_seconds=60)
        long = await propose_issue(client, expires_in_seconds=10 ** 9)

    async def lifetime(change_id: str) -> float:
        r = await server.client.get(f"/api/mcp/pending-changes/{change_id}",
                                    headers={"Authorization": f"Bearer {key}"})
        data = r.json()
        created = datetime.fromisoformat(data["createdAt"].rstrip("Z"))
        expires = datetime.fromisoformat(data["expiresAt"].rstrip("Z"))
        return (expires - created).total_seconds()

    assert await lifetime(short["pendingChangeId"]) == pytest.approx(60, abs=1)
    assert await lifetime(long["pendingChangeId"]) == pytest.approx(
        server.settings.pending_change_ttl_seconds, abs=1)


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("create_issue", {"project_key": "NOPE", "title": "x"}, "project NOPE does not exist"),
        ("create_issue", {"project_key": "WEB", "title": "   "}, "title"),
        ("update_status", {"issue_key": "WEB-99", "status": "Done"}, "issue WEB-99 does not exist"),
        ("update_status", {"issue_key": "WEB-1", "status": "Doing"}, "status"),
        ("add_comment", {"issue_key": "not a key", "body": "hi"}, "issue key must look like"),
        ("delete_issue", {"issue_key": "WEB-42"}, "issue WEB-42 does not exist"),
        ("create_project", {"key": "WEB", "name": "Again"}, "project WEB already exists"),
        ("update_issue", {"issue_key": "WEB-1"}, "nothing to change"),
        ("create_issue", {"project_key": "WEB", "title": "x", "expires_in_seconds": -5},
         "expires_in_seconds"),
    ],
)
async def test_invalid_arguments_give_a_tool_error_that_says_what_is_wrong_and_create_nothing(
    server: Harness, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    key = await _key(server)
    token = await server.reviewer_token()
    seed = await server.propose(key)  # WEB-1 exists once approved
    assert (await server.approve(token, seed["id"])).status_code == 200
    async with mcp_client(server, key) as client:
        result = await client.call_tool(tool, arguments)
        listed = await client.call_tool("list_pending_changes", {"status": "Pending"})
    assert result.is_error
    assert expected in _text(result), _text(result)
    assert listed.structured_content is not None and listed.structured_content["total"] == 0


async def test_bad_status_error_names_the_allowed_values(server: Harness) -> None:
    key = await _key(server)
    token = await server.reviewer_token()
    seed = await server.propose(key)
    assert (await server.approve(token, seed["id"])).status_code == 200
    async with mcp_client(server, key) as client:
        result = await client.call_tool("update_status", {"issue_key": "WEB-1",
                                                          "status": "Doing"})
    assert result.is_error
    assert "InProgress" in _text(result) and "Doing" not in _text(result).split(":")[0]


async def test_read_tools_list_and_get(server: Harness) -> None:
    key = await _key(server)
    token = await server.reviewer_token()
    seed = await server.propose(key)
    assert (await server.approve(token, seed["id"])).status_code == 200
    async with mcp_client(server, key, header="x-api-key") as client:
        proposal = await propose_issue(client, "second")
        pending = await client.call_tool("list_pending_changes", {"status": "Pending"})
        everything = await client.call_tool("list_pending_changes", {"page_size": 1})
        one = await client.call_tool("get_pending_change",
                                     {"pending_change_id": proposal["pendingChangeId"]})
        issue = await client.call_tool("get_issue", {"issue_key": "web-1"})
        missing = await client.call_tool("get_issue", {"issue_key": "WEB-77"})
        bad_id = await client.call_tool("get_pending_change", {"pending_change_id": "nope"})
        bad_status = await client.call_tool("list_pending_changes", {"status": "Maybe"})
    assert pending.structured_content is not None
    assert [c["id"] for c in pending.structured_content["items"]] == [proposal["pendingChangeId"]]
    assert everything.structured_content is not None
    assert everything.structured_content["total"] == 2
    assert len(everything.structured_content["items"]) == 1
    assert one.structured_content is not None and one.structured_content["status"] == "Pending"
    assert json.loads(_text(one))["id"] == proposal["pendingChangeId"]
    assert issue.structured_content is not None and issue.structured_content["key"] == "WEB-1"
    assert missing.is_error and "WEB-77" in _text(missing)
    assert bad_id.is_error and "UUID" in _text(bad_id)
    assert bad_status.is_error and "status must be one of" in _text(bad_status)


@MODES
async def test_resources_are_listed_and_readable_in_the_tenant(server: Harness, mode: Mode
                                                               ) -> None:
    key = await _key(server)
    token = await server.reviewer_token()
    seed = await server.propose(key)
    assert (await server.approve(token, seed["id"])).status_code == 200
    async with mcp_client(server, key, mode) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in
                     (await client.list_resource_templates()).resource_templates]
        projects = await read_json(client, "colaflow://projects")
        issue = await read_json(client, "colaflow://issues/WEB-1")
        change = await read_json(client, seed["resourceUri"])
        with pytest.raises(MCPError) as missing:
            await read_json(client, "colaflow://issues/WEB-2")
    assert resources == ["colaflow://projects"]
    assert sorted(templates) == ["colaflow://issues/{key}",
                                 "colaflow://pending-changes/{change_id}"]
    assert [p["key"] for p in projects["projects"]] == ["WEB"]
    assert issue["title"] == "Fix the login page"
    assert change["status"] == "Approved" and change["executionResult"]["success"] is True
    assert "not found" in missing.value.message


async def test_workspace_reads_are_scoped_to_the_tenant(server: Harness) -> None:
    key_a = await _key(server)
    token_a = await server.reviewer_token()
    seed = await server.propose(key_a)
    assert (await server.approve(token_a, seed["id"])).status_code == 200
    key_b = await server.agent_key("globex")
    async with mcp_client(server, key_b) as client:
        projects = await read_json(client, "colaflow://projects")
        issue = await client.call_tool("get_issue", {"issue_key": "WEB-1"})
        listed = await client.call_tool("list_pending_changes", {})
        proposal = await client.call_tool("create_issue", {"project_key": "WEB", "title": "x"})
    assert projects == {"projects": []}
    assert issue.is_error
    assert listed.structured_content is not None and listed.structured_content["total"] == 0
    assert proposal.is_error and "project WEB does not exist" in _text(proposal)


@MODES
async def test_every_proposing_tool_asks_why_and_the_change_says_who_and_why(
    server: Harness, mode: Mode
) -> None:
    await server.project()
    key = await server.agent_key(name="triage-bot")
    async with mcp_client(server, key, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in PROPOSING:
            rationale = tools[name].input_schema["properties"]["rationale"]
            assert "why" in rationale["description"].lower(), name
            assert "rationale" not in tools[name].input_schema.get("required", [])
        proposal = await propose_issue(client, rationale="Users cannot sign in on Safari.")
        change = await read_json(client, proposal["resourceUri"])
        too_long = await client.call_tool("create_issue", {
            "project_key": "WEB", "title": "x", "rationale": "y" * 2001})
        listed = await client.call_tool("list_pending_changes", {})
    assert change["rationale"] == "Users cannot sign in on Safari."
    assert change["proposedBy"]["keyName"] == "triage-bot" and change["proposedBy"]["keyId"]
    assert change["proposedArguments"] == change["arguments"] and change["edited"] is False
    assert too_long.is_error and "rationale" in _text(too_long) and "2000" in _text(too_long)
    assert listed.structured_content is not None and listed.structured_content["total"] == 1


async def test_the_agent_reads_that_its_change_was_edited_and_what_was_applied(
    server: Harness,
) -> None:
    key = await _key(server)
    token = await server.reviewer_token(user="rita")
    async with mcp_client(server, key) as client:
        proposal = await propose_issue(client, title="Fix teh login")
        r = await server.client.post(
            f"/api/mcp/pending-changes/{proposal['pendingChangeId']}/approve",
            headers={"Authorization": f"Bearer {token}"},
            json={"arguments": {"project_key": "WEB", "title": "Fix the login"}})
        assert r.status_code == 200, r.text
        change = await read_json(client, proposal["resourceUri"])
        via_tool = await client.call_tool("get_pending_change",
                                          {"pending_change_id": proposal["pendingChangeId"]})
    assert (change["status"], change["edited"], change["editedBy"]) == ("Approved", True, "rita")
    assert change["arguments"]["title"] == "Fix the login"
    assert change["proposedArguments"]["title"] == "Fix teh login"
    assert via_tool.structured_content is not None
    assert via_tool.structured_content["edited"] is True
