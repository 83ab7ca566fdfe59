"""Credentials, roles, tenant walls and bad input on every REST route."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from colaflow_mcp.domain import admin
from colaflow_mcp.domain.auth import JWT_AUDIENCE, TokenIssuer
from colaflow_mcp.store.tables import ApiKey, Issue, PendingChange, utcnow
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_stored_keys_are_hashes_never_the_key(harness: Harness) -> None:
    key = await harness.agent_key()
    async with harness.runtime.db.read() as s:
        rows = (await s.exec(select(ApiKey))).all()
    assert len(rows) == 1
    row = rows[0]
    assert key.startswith("cola_") and len(key) >= 40
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (row.key_hash, row.prefix, row.name)
    assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 2


async def test_key_works_by_bearer_and_x_api_key_and_records_last_use(harness: Harness) -> None:
    key = await harness.agent_key()
    for headers in (bearer(key), {"X-API-Key": key}):
        r = await harness.client.get("/api/mcp/pending-changes", headers=headers)
        assert r.status_code == 200, r.text
    async with harness.runtime.db.read() as s:
        row = (await s.exec(select(ApiKey))).one()
    assert row.last_used_at is not None


async def test_revoked_and_expired_keys_are_refused(harness: Harness) -> None:
    key = await harness.agent_key()
    async with harness.runtime.db.read() as s:
        row = (await s.exec(select(ApiKey))).one()
    await admin.revoke_api_key(harness.runtime.db, row.id)
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(key))
    assert r.status_code == 401
    tenant = await admin.get_or_create_tenant(harness.runtime.db, "acme")
    _, expired = await admin.create_api_key(harness.runtime.db, tenant, "old",
                                           expires_at=utcnow() - timedelta(seconds=1))
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(expired))
    assert r.status_code == 401


@pytest.mark.parametrize("credential", [
    "", "cola_", "cola_short", "cola_" + "A" * 43, "not-a-key", "a.b.c", "x" * 5000,
])
async def test_bad_credentials_get_401_with_a_message(harness: Harness, credential: str) -> None:
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(credential))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and r.json()["message"]


async def test_forged_or_foreign_reviewer_tokens_are_refused(harness: Harness) -> None:
    import jwt

    tenant = await admin.get_or_create_tenant(harness.runtime.db, "acme")
    other = TokenIssuer("another-secret-that-is-long-enough-1234567", 3600)
    forged = other.issue(tenant, "mallory")
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(forged))
    assert r.status_code == 401
    expired = harness.runtime.tokens.issue(tenant, "alice", ttl_seconds=-10)
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(expired))
    assert r.status_code == 401
    none_alg = jwt.encode({"sub": "x", "tid": tenant.id, "tenant": "acme", "role": "reviewer",
                           "aud": JWT_AUDIENCE, "exp": 9999999999}, key=None,
                          algorithm="none")
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(none_alg))
    assert r.status_code == 401


async def test_roles_agents_cannot_decide_reviewers_cannot_propose(harness: Harness) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    c = await harness.propose(key)
    r = await harness.approve(key, c["id"])
    assert r.status_code == 403
    r = await harness.reject(key, c["id"], "nope")
    assert r.status_code == 403
    r = await harness.client.post("/api/mcp/pending-changes", headers=bearer(token),
                                  json={"tool": "create_issue", "arguments": {}})
    assert r.status_code == 403
    r = await harness.client.get(f"/api/mcp/pending-changes/{c['id']}", headers=bearer(key))
    assert r.json()["status"] == "Pending"


async def test_foreign_tenant_sees_exactly_what_a_missing_id_shows(harness: Harness) -> None:
    key_a, token_a = await harness.agent_key("acme"), await harness.reviewer_token("acme")
    key_b, token_b = await harness.agent_key("globex"), await harness.reviewer_token("globex")
    await harness.project("acme")
    c = await harness.propose(key_a)
    missing = str(uuid.uuid4())
    for cid in (c["id"], missing):
        for cred in (key_b, token_b):
            r = await harness.client.get(f"/api/mcp/pending-changes/{cid}", headers=bearer(cred))
            assert (r.status_code, r.json()) == (
                404, {"error": "not_found", "message": "pending change not found"})
        r = await harness.approve(token_b, cid)
        assert (r.status_code, r.json()["message"]) == (404, "pending change not found")
        r = await harness.reject(token_b, cid, "mine now")
        assert (r.status_code, r.json()["message"]) == (404, "pending change not found")
    r = await harness.client.get("/api/mcp/pending-changes", headers=bearer(token_b))
    assert r.json()["total"] == 0
    r = await harness.client.get("/api/projects", headers=bearer(key_b))
    assert r.json()["items"] == []
    r = await harness.client.get("/api/issues/WEB-1", headers=bearer(key_b))
    assert r.status_code == 404
    # Tenant B cannot propose against tenant A's project either.
    r = await harness.client.post("/api/mcp/pending-changes", headers=bearer(key_b), json={
        "tool": "create_issue", "arguments": {"project_key": "WEB", "title": "x"}})
    assert r.status_code == 400 and "does not exist" in r.json()["message"]
    # And A's change is untouched.
    r = await harness.client.get(f"/api/mcp/pending-changes/{c['id']}", headers=bearer(token_a))
    assert r.json()["status"] == "Pending"


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "%27%20OR%201%3D1", "x" * 300])
async def test_malformed_ids_get_400_and_change_nothing(harness: Harness, bad_id: str) -> None:
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    # Something a malformed id could hit: a change waiting for its decision.
    await harness.propose(key)
    before = await _stored(harness)
    for method, suffix in (("GET", ""), ("POST", "/approve"), ("POST", "/reject")):
        r = await harness.client.request(method, f"/api/mcp/pending-changes/{bad_id}{suffix}",
                                         headers=bearer(token), json={"reason": "r"})
        assert r.status_code == 400, (method, suffix, r.text)
        assert "UUID" in r.json()["message"]
    assert await _stored(harness) == before
    assert [row["status"] for row in before["changes"]] == ["Pending"]


async def _stored(harness: Harness) -> dict[str, list[dict[str, object]]]:
    """Every pending change and issue, as stored."""
    async with harness.runtime.db.read() as s:
        changes = (await s.exec(select(PendingChange))).all()
        issues = (await s.exec(select(Issue))).all()
    return {"changes": [c.model_dump() for c in changes],
            "issues": [i.model_dump() for i in issues]}


@pytest.mark.parametrize("body,fragment", [
    (b"{", "JSON"),
    (b"[1,2]", "object"),
    (b'{"tool": 5}', "tool"),
    (b'{"tool": "drop_database"}', "unknown tool"),
    (b'{"tool": "create_issue", "arguments": "x"}', "object"),
    (b'{"tool": "create_issue", "arguments": {"project_key": "WEB"}}', "title"),
    (b'{"tool": "create_issue", "arguments": {"project_key": "WEB", "title": "  "}}', "title"),
    (b'{"tool": "create_issue", "arguments": {"project_key": "NOPE", "title": "t"}}',
     "NOPE does not exist"),
    (b'{"tool": "update_status", "arguments": {"issue_key": "WEB-1", "status": "Gone"}}',
     "status"),
    (b'{"tool": "update_issue", "arguments": {"issue_key": "WEB-99", "title": "t"}}',
     "WEB-99 does not exist"),
    (b'{"tool": "create_issue", "arguments": {"project_key": "WEB", "title": "t", "x": 1}}',
     "x"),
    (b'{"tool": "create_issue", "arguments": {"project_key": "WEB", "title": "t"}, '
     b'"expiresInSeconds": -5}', "positive"),
])
async def test_bad_proposals_get_400_and_create_nothing(
    harness: Harness, body: bytes, fragment: str
) -> None:
    key = await harness.agent_key()
    await harness.project()
    r = await harness.client.post("/api/mcp/pending-changes", content=body,
                                  headers={**bearer(key), "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]
    async with harness.runtime.db.read() as s:
        assert (await s.exec(select(PendingChange))).all() == []


async def test_bad_list_parameters(harness: Harness) -> None:
    token = await harness.reviewer_token()
    for q in ("status=Nope", "page=0", "pageSize=1000", "page=abc"):
        r = await harness.client.get(f"/api/mcp/pending-changes?{q}", headers=bearer(token))
        assert r.status_code == 400, q


async def test_health_reports_database_and_loops(harness: Harness) -> None:
    r = await harness.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["database"] == "ok" and body["status"] == "ok"
    assert all(body["loops"].values()) and "expiry" in body["loops"]
    assert body["backplane"]["listening"] is True
    assert body["hub"]["subscriptions"] == 0 and "mcp" in body
