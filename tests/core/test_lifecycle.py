"""Propose → decide → executed, for each operation, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from colaflow_mcp.delivery.events import DecisionEvent
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def _issue(h: Harness, key: str, ik: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/issues/{ik}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _approved(h: Harness, token: str, change_id: str) -> dict[str, Any]:
    r = await h.approve(token, change_id)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "Approved"
    return body


async def test_create_project_then_issue_then_comment_flow(harness: Harness) -> None:
    key = await harness.agent_key()
    token = await harness.reviewer_token()
    p = await harness.propose(key, "create_project", {"key": "api", "name": "Public API"})
    assert p["status"] == "Pending"
    assert p["diff"]["before"] is None and p["diff"]["after"]["key"] == "API"
    # Nothing is written before approval.
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["items"] == []
    done = await _approved(harness, token, p["id"])
    assert done["executionResult"]["success"] is True
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {key}"})
    assert [x["key"] for x in r.json()["items"]] == ["API"]

    issue = await harness.propose(key, "create_issue", {
        "project_key": "API", "title": "Rate limits", "type": "Story", "priority": "High"})
    done = await _approved(harness, token, issue["id"])
    assert done["executionResult"]["success"] is True
    assert done["entityId"] == done["executionResult"]["entityId"]
    got = await _issue(harness, key, "API-1")
    assert got["title"] == "Rate limits" and got["type"] == "Story" and got["priority"] == "High"

    c = await harness.propose(key, "add_comment", {"issue_key": "API-1", "body": "Looks big"})
    assert c["diff"]["operation"] == "Create" and c["diff"]["entityType"] == "Comment"
    await _approved(harness, token, c["id"])
    got = await _issue(harness, key, "API-1")
    assert [x["body"] for x in got["comments"]] == ["Looks big"]


async def test_update_issue_diff_and_execution(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    await _approved(harness, token, (await harness.propose(key))["id"])
    u = await harness.propose(key, "update_issue", {"issue_key": "web-1", "title": "New title",
                                                    "assignee": "bob"})
    diff = u["diff"]
    assert diff["operation"] == "Update" and diff["entityKey"] == "WEB-1"
    assert diff["before"]["title"] == "Fix the login page"
    assert {c["field"] for c in diff["changedFields"]} == {"title", "assignee"}
    assert (await _issue(harness, key, "WEB-1"))["title"] == "Fix the login page"
    await _approved(harness, token, u["id"])
    got = await _issue(harness, key, "WEB-1")
    assert got["title"] == "New title" and got["assignee"] == "bob"


async def test_update_status_and_delete_issue(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    await _approved(harness, token, (await harness.propose(key))["id"])
    s = await harness.propose(key, "update_status", {"issue_key": "WEB-1", "status": "InProgress"})
    assert s["diff"]["changedFields"] == [
        {"field": "status", "oldValue": "ToDo", "newValue": "InProgress"}]
    await _approved(harness, token, s["id"])
    assert (await _issue(harness, key, "WEB-1"))["status"] == "InProgress"
    d = await harness.propose(key, "delete_issue", {"issue_key": "WEB-1"})
    assert d["diff"]["after"] is None and d["diff"]["before"]["status"] == "InProgress"
    await _approved(harness, token, d["id"])
    r = await harness.client.get("/api/issues/WEB-1", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404


async def test_stale_update_fails_cleanly_and_applies_nothing(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    await _approved(harness, token, (await harness.propose(key))["id"])
    first = await harness.propose(key, "update_issue", {"issue_key": "WEB-1", "title": "A"})
    second = await harness.propose(key, "update_issue",
                                   {"issue_key": "WEB-1", "title": "B", "priority": "Critical"})
    await _approved(harness, token, first["id"])
    done = await _approved(harness, token, second["id"])
    result = done["executionResult"]
    assert result["success"] is False
    assert "changed since" in result["error"]
    got = await _issue(harness, key, "WEB-1")
    assert got["title"] == "A" and got["priority"] == "Medium"  # nothing half-applied


async def test_reject_requires_reason_and_records_it(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    c = await harness.propose(key)
    r = await harness.reject(token, c["id"], reason="  ")
    assert r.status_code == 400
    r = await harness.reject(token, c["id"], reason=None)
    assert r.status_code == 400
    r = await harness.reject(token, c["id"], reason="Duplicate of WEB-3")
    assert r.status_code == 200
    assert r.json()["status"] == "Rejected" and r.json()["reason"] == "Duplicate of WEB-3"
    assert r.json()["decidedBy"] == "alice"
    r = await harness.approve(token, c["id"])
    assert r.status_code == 409 and r.json()["currentStatus"] == "Rejected"
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["items"][0]["issueCount"] == 0


class _Waiter:
    """A subscriber on the notifier: the same path the hub and MCP sessions use."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.events: list[DecisionEvent] = []
        self.arrived = anyio.Event()

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append(event)
        self.arrived.set()


async def test_expiry_happens_within_a_second_of_the_deadline(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    c = await harness.propose(key, expires_in_seconds=0.5)
    principal = await harness.runtime.auth.authenticate(key)
    assert principal is not None
    waiter = _Waiter(principal.tenant_id)
    assert await harness.runtime.notifier.subscribe(waiter, c["id"]) is not None
    with anyio.fail_after(5):
        await waiter.arrived.wait()
    assert [e.status for e in waiter.events] == ["Expired"]
    from datetime import datetime

    deadline = datetime.fromisoformat(c["expiresAt"].replace("Z", "+00:00"))
    r = await harness.client.get(f"/api/mcp/pending-changes/{c['id']}",
                                 headers={"Authorization": f"Bearer {key}"})
    assert r.json()["status"] == "Expired"
    decided = datetime.fromisoformat(r.json()["decidedAt"].replace("Z", "+00:00"))
    lag = (decided - deadline).total_seconds()
    assert 0 <= lag < 1.0, lag
    r = await harness.approve(token, c["id"])
    assert r.status_code == 409 and r.json()["currentStatus"] == "Expired"


async def test_expires_in_is_capped_by_server_ttl(harness: Harness) -> None:
    key = await harness.agent_key()
    await harness.project()
    from datetime import datetime

    c = await harness.propose(key, expires_in_seconds=10 * 86400)
    created = datetime.fromisoformat(c["createdAt"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(c["expiresAt"].replace("Z", "+00:00"))
    assert abs((expires - created).total_seconds() - 86400) < 1


async def test_list_filters_by_status_and_pages(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    ids = [(await harness.propose(key, arguments={"project_key": "WEB", "title": f"T{i}"}))["id"]
           for i in range(5)]
    await _approved(harness, token, ids[0])
    h = {"Authorization": f"Bearer {token}"}
    r = await harness.client.get("/api/mcp/pending-changes?status=Pending&pageSize=2", headers=h)
    body = r.json()
    assert body["total"] == 4 and len(body["items"]) == 2
    r = await harness.client.get("/api/mcp/pending-changes?status=Pending&pageSize=2&page=3",
                                 headers=h)
    assert len(r.json()["items"]) == 0
    r = await harness.client.get("/api/mcp/pending-changes?status=Approved", headers=h)
    assert [x["id"] for x in r.json()["items"]] == [ids[0]]


async def test_project_and_comment_updates_and_deletes(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    await _approved(harness, token, (await harness.propose(key))["id"])
    c = await harness.propose(key, "add_comment", {"issue_key": "WEB-1", "body": "first"})
    comment_id = (await _approved(harness, token, c["id"]))["entityId"]
    e = await harness.propose(key, "update_comment", {"comment_id": comment_id, "body": "edited"})
    assert e["diff"]["changedFields"] == [
        {"field": "body", "oldValue": "first", "newValue": "edited"}]
    await _approved(harness, token, e["id"])
    assert [x["body"] for x in (await _issue(harness, key, "WEB-1"))["comments"]] == ["edited"]
    d = await harness.propose(key, "delete_comment", {"comment_id": comment_id})
    await _approved(harness, token, d["id"])
    assert (await _issue(harness, key, "WEB-1"))["comments"] == []

    u = await harness.propose(key, "update_project", {"project_key": "WEB", "name": "Web 2"})
    await _approved(harness, token, u["id"])
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["items"][0]["name"] == "Web 2"
    # A project with issues cannot be proposed for deletion; an empty one can.
    r = await harness.client.post("/api/mcp/pending-changes", headers={
        "Authorization": f"Bearer {key}"}, json={"tool": "delete_project",
                                                 "arguments": {"project_key": "WEB"}})
    assert r.status_code == 400 and "still has issues" in r.json()["message"]
    await _approved(harness, token, (await harness.propose(
        key, "delete_issue", {"issue_key": "WEB-1"}))["id"])
    dp = await harness.propose(key, "delete_project", {"project_key": "WEB"})
    await _approved(harness, token, dp["id"])
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {key}"})
    assert r.json()["items"] == []


async def test_create_issue_fails_cleanly_if_project_vanished(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    late = await harness.propose(key)  # proposed while WEB exists
    dp = await harness.propose(key, "delete_project", {"project_key": "WEB"})
    await _approved(harness, token, dp["id"])
    done = await _approved(harness, token, late["id"])
    assert done["executionResult"] == {
        "success": False, "entityId": None, "error": "project WEB no longer exists"}
