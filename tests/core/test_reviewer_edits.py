"""Who and why on every change, and a reviewer's edit before approving (REST and domain)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from colaflow_mcp.delivery.events import DecisionEvent
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def _approve(h: Harness, token: str, change_id: str, body: Any) -> Any:
    return await h.client.post(f"/api/mcp/pending-changes/{change_id}/approve", json=body,
                               headers=_auth(token))


async def _get(h: Harness, credential: str, change_id: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/mcp/pending-changes/{change_id}", headers=_auth(credential))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class _Agent:
    """A local subscriber, as the hub and MCP register theirs."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.events: list[DecisionEvent] = []
        self.arrived = anyio.Event()

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append(event)
        self.arrived.set()


async def test_a_proposal_says_who_proposed_it_and_why(harness: Harness) -> None:
    key = await harness.agent_key(name="release-bot")
    await harness.project()
    principal = await harness.runtime.auth.authenticate(key)
    assert principal is not None
    r = await harness.client.post("/api/mcp/pending-changes", headers=_auth(key), json={
        "tool": "create_issue", "arguments": {"project_key": "web", "title": " Ship it "},
        "rationale": "  The release checklist asks for a tracking issue.  "})
    assert r.status_code == 201, r.text
    change = r.json()
    assert change["proposedBy"] == {"keyId": principal.api_key_id, "keyName": "release-bot"}
    assert change["rationale"] == "The release checklist asks for a tracking issue."
    assert change["proposedArguments"] == change["arguments"]
    assert change["arguments"]["project_key"] == "WEB" and change["arguments"]["title"] == "Ship it"
    assert (change["edited"], change["editedBy"]) == (False, None)
    # The same on every read, for the agent and the reviewer.
    token = await harness.reviewer_token()
    assert await _get(harness, token, change["id"]) == await _get(harness, key, change["id"])
    assert (await harness.propose(key))["rationale"] is None  # optional


async def test_rationale_must_be_a_string_of_at_most_2000_characters(harness: Harness) -> None:
    key = await harness.agent_key()
    await harness.project()
    body = {"tool": "create_issue", "arguments": {"project_key": "WEB", "title": "T"}}
    for rationale, ok in (("x" * 2000, True), ("x" * 2001, False), (42, False),
                          (["why"], False), ("   ", True)):
        r = await harness.client.post("/api/mcp/pending-changes", headers=_auth(key),
                                      json={**body, "rationale": rationale})
        assert (r.status_code == 201) is ok, (rationale, r.text)
        if not ok:
            assert r.status_code == 400 and "rationale" in r.json()["message"]
    listed = await harness.client.get("/api/mcp/pending-changes", headers=_auth(key))
    assert [i["rationale"] for i in listed.json()["items"]] == [None, "x" * 2000]


async def test_a_reviewer_edits_the_arguments_before_approving(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token(user="carol")
    await harness.project()
    proposed = await harness.propose(key, arguments={"project_key": "WEB", "title": "Fix logn",
                                                     "priority": "Low"})
    principal = await harness.runtime.auth.authenticate(key)
    assert principal is not None
    agent = _Agent(principal.tenant_id)
    await harness.runtime.notifier.subscribe(agent, proposed["id"])

    edit = {"project_key": "WEB", "title": "Fix login", "priority": "High",
            "assignee": "dana"}
    r = await _approve(harness, token, proposed["id"], {"arguments": edit})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "Approved" and done["executionResult"]["success"] is True
    assert (done["edited"], done["editedBy"], done["decidedBy"]) == (True, "carol", "carol")
    assert done["proposedArguments"] == proposed["arguments"]
    assert done["arguments"] == {**edit, "description": "", "type": "Task"}
    # The diff and summary describe what was applied.
    after = done["diff"]["after"]
    assert (after["title"], after["priority"], after["assignee"]) == ("Fix login", "High", "dana")
    assert "Fix login" in done["summary"] and done["summary"] != proposed["summary"]
    issue = (await harness.client.get("/api/issues/WEB-1", headers=_auth(key))).json()
    assert (issue["title"], issue["priority"], issue["assignee"]) == ("Fix login", "High", "dana")
    # The agent learns that it was edited, and what was applied.
    with anyio.fail_after(5):
        await agent.arrived.wait()
    [event] = agent.events
    assert event.target == "PendingChangeApproved"
    assert event.payload["edited"] is True and event.payload["arguments"] == done["arguments"]
    assert event.payload["approvedBy"] == "carol"
    assert (await _get(harness, key, proposed["id"]))["edited"] is True


async def test_an_unedited_approval_says_so(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    plain = await harness.propose(key)
    same = await harness.propose(key, arguments={"project_key": "WEB", "title": "Other"})
    principal = await harness.runtime.auth.authenticate(key)
    assert principal is not None
    agent = _Agent(principal.tenant_id)
    await harness.runtime.notifier.subscribe(agent, plain["id"])
    r = await harness.approve(token, plain["id"])
    assert r.status_code == 200 and r.json()["edited"] is False
    with anyio.fail_after(5):
        await agent.arrived.wait()
    assert agent.events[0].payload["edited"] is False
    assert "arguments" not in agent.events[0].payload
    # The proposal's own arguments (in any spelling the tool accepts) are no edit.
    r = await _approve(harness, token, same["id"], {"arguments": {
        "project_key": "web", "title": " Other ", "priority": "Medium"}})
    assert r.status_code == 200, r.text
    assert (r.json()["edited"], r.json()["editedBy"]) == (False, None)
    assert r.json()["diff"] == same["diff"]


@pytest.mark.parametrize(("body", "names"), [
    ({"arguments": {"project_key": "WEB", "title": ""}}, ["arguments.title"]),
    ({"arguments": {"project_key": "WEB", "title": "T", "priority": "Urgent",
                    "colour": "red"}}, ["arguments.priority", "arguments.colour"]),
    ({"arguments": {"title": "No project"}}, ["arguments.project_key"]),
    ({"arguments": {"project_key": "NOPE", "title": "T"}}, ["NOPE"]),
    ({"arguments": ["project_key", "WEB"]}, ["arguments must be an object"]),
    ({"argument": {"project_key": "WEB", "title": "Typo"}}, ["'argument'", "arguments"]),
    ({"args": {"project_key": "WEB", "title": "Typo"}}, ["'args'"]),
])
async def test_an_invalid_edit_is_refused_and_the_change_stays_pending(
        harness: Harness, body: dict[str, Any], names: list[str]) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    change = await harness.propose(key)
    r = await _approve(harness, token, change["id"], body)
    assert r.status_code == 400, r.text
    for name in names:
        assert name in r.json()["message"], r.json()
    after = await _get(harness, token, change["id"])
    assert (after["status"], after["edited"], after["arguments"]) == (
        "Pending", False, change["arguments"])
    assert (await harness.approve(token, change["id"])).status_code == 200


async def test_other_fields_in_an_approval_body_are_ignored_as_before(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    change = await harness.propose(key)
    r = await _approve(harness, token, change["id"], {"reason": "lgtm", "arguments": None})
    assert r.status_code == 200, r.text
    assert r.json()["edited"] is False and r.json()["arguments"] == change["arguments"]


async def test_edits_of_decided_foreign_or_agents_changes_are_refused(
        harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    change = await harness.propose(key)
    edit = {"arguments": {"project_key": "WEB", "title": "Edited"}}
    r = await _approve(harness, key, change["id"], edit)
    assert r.status_code == 403
    r = await _approve(harness, await harness.reviewer_token("globex"), change["id"], edit)
    assert r.status_code == 404
    assert (await harness.reject(token, change["id"], "no")).status_code == 200
    r = await _approve(harness, token, change["id"], edit)
    assert r.status_code == 409 and r.json()["currentStatus"] == "Rejected"
    after = await _get(harness, token, change["id"])
    assert after["arguments"] == change["arguments"] and after["edited"] is False


async def test_an_edited_update_is_planned_against_the_issue_as_it_is(
        harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    assert (await harness.approve(token, (await harness.propose(key))["id"])).status_code == 200
    change = await harness.propose(key, "update_issue", {"issue_key": "WEB-1",
                                                         "title": "Login fixd"})
    r = await _approve(harness, token, change["id"], {"arguments": {
        "issue_key": "WEB-1", "title": "Login fixed", "assignee": "erin"}})
    assert r.status_code == 200, r.text
    fields = {c["field"]: c["newValue"] for c in r.json()["diff"]["changedFields"]}
    assert fields == {"title": "Login fixed", "assignee": "erin"}
    issue = (await harness.client.get("/api/issues/WEB-1", headers=_auth(key))).json()
    assert (issue["title"], issue["assignee"]) == ("Login fixed", "erin")
