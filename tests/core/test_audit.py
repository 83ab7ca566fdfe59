"""The audit trail: every proposal, decision, execution and key change is an entry of the
tenant's hash chain, written in the transaction it records; reviewers read it over REST;
verify recomputes the chain and names the first entry that was tampered with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, bindparam, text, update
from sqlmodel import Session, col

from colaflow_mcp.domain import admin, audit
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.recording import Transition
from colaflow_mcp.store.tables import PendingChange, Tenant, utcnow
from tests.harness import Harness

pytestmark = pytest.mark.anyio


def _auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def _tenant_id(h: Harness, slug: str = "acme") -> str:
    tenant = await admin.get_tenant(h.runtime.db, slug)
    assert tenant is not None
    return tenant.id


async def _expire_now(h: Harness, change_id: str) -> None:
    async with h.runtime.db.write() as s:
        await s.exec(update(PendingChange).where(col(PendingChange.id) == change_id)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    await h.runtime.changes.expire_due()


async def _story(h: Harness) -> dict[str, Any]:
    """A key, three proposals, an edited approval, a rejection, an expiry, a revocation:
    nine entries in acme's chain."""
    key = await h.agent_key(name="planner")
    token = await h.reviewer_token()
    await h.project()
    a = await h.propose(key, arguments={"project_key": "WEB", "title": "Fix login"})
    b = await h.propose(key, "create_issue", {"project_key": "WEB", "title": "Dark mode"})
    c = await h.propose(key, "create_issue", {"project_key": "WEB", "title": "Old idea"})
    r = await h.client.post(f"/api/mcp/pending-changes/{a['id']}/approve", headers=_auth(token),
                            json={"arguments": {"project_key": "WEB", "title": "Fix logins"}})
    assert r.status_code == 200, r.text
    assert (await h.reject(token, b["id"], "not now")).status_code == 200
    await _expire_now(h, c["id"])
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None and principal.api_key_id is not None
    await admin.revoke_api_key(h.runtime.db, principal.api_key_id)
    return {"key": key, "token": token, "keyId": principal.api_key_id,
            "a": a["id"], "b": b["id"], "c": c["id"]}


async def _trail(h: Harness, token: str, query: str = "") -> dict[str, Any]:
    r = await h.client.get(f"/api/audit{query}", headers=_auth(token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_every_transition_is_an_entry_of_one_verified_chain(harness: Harness) -> None:
    st = await _story(harness)
    entries = (await _trail(harness, st["token"]))["entries"]
    assert [(e["seq"], e["action"], e["changeId"]) for e in entries] == [
        (1, "key.created", None),
        (2, "change.proposed", st["a"]), (3, "change.proposed", st["b"]),
        (4, "change.proposed", st["c"]),
        (5, "change.approved", st["a"]), (6, "change.executed", st["a"]),
        (7, "change.rejected", st["b"]), (8, "change.expired", st["c"]),
        (9, "key.revoked", None)]
    by_seq = {e["seq"]: e for e in entries}
    agent = {"type": "agent", "id": st["keyId"], "name": "planner"}
    alice = {"type": "reviewer", "id": "alice", "name": "alice"}
    assert by_seq[1]["actor"]["type"] == "operator"
    assert by_seq[1]["data"]["keyId"] == st["keyId"] and by_seq[1]["data"]["name"] == "planner"
    assert by_seq[2]["actor"] == agent
    assert by_seq[2]["data"]["arguments"]["title"] == "Fix login"
    assert by_seq[5]["actor"] == alice and by_seq[5]["data"]["edited"] is True
    assert by_seq[5]["data"]["arguments"]["title"] == "Fix logins"
    assert by_seq[6]["data"]["success"] is True and by_seq[6]["data"]["entityId"]
    assert by_seq[7]["actor"] == alice and by_seq[7]["data"] == {"reason": "not now"}
    assert by_seq[8]["actor"]["type"] == "system"
    assert by_seq[9]["actor"]["type"] == "operator" and by_seq[9]["data"]["keyId"] == st["keyId"]
    # The chain, recomputed by hand from the contract's formula.
    prev = "0" * 64
    for e in entries:
        assert e["prevHash"] == prev
        body = {k: e[k] for k in ("seq", "at", "actor", "action", "changeId", "data")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert e["hash"] == hashlib.sha256((prev + canonical).encode()).hexdigest()
        prev = e["hash"]
    verdict = await harness.runtime.audit.verify(await _tenant_id(harness))
    assert (verdict.ok, verdict.entries, verdict.describe()) == (True, 9, "ok: 9 entries")


async def test_audit_api_pages_filters_and_is_for_the_tenants_reviewers(
        harness: Harness) -> None:
    st = await _story(harness)
    token = st["token"]
    first = await _trail(harness, token, "?limit=4")
    assert [e["seq"] for e in first["entries"]] == [1, 2, 3, 4] and first["next"] == 4
    rest = await _trail(harness, token, f"?after={first['next']}&limit=5")
    assert [e["seq"] for e in rest["entries"]] == [5, 6, 7, 8, 9] and rest["next"] == 5 + 4
    assert await _trail(harness, token, "?after=9") == {"entries": [], "next": None}
    one = await _trail(harness, token, f"?changeId={st['a']}")
    assert [e["action"] for e in one["entries"]] == [
        "change.proposed", "change.approved", "change.executed"]
    assert one["next"] is None

    # Agents may not read it; another tenant's reviewer sees only its own (empty) trail.
    r = await harness.client.get("/api/audit", headers=_auth(await harness.agent_key()))
    assert r.status_code == 403
    other = await harness.reviewer_token("globex", "mallory")
    assert await _trail(harness, other) == {"entries": [], "next": None}
    assert (await _trail(harness, other, f"?changeId={st['a']}"))["entries"] == []
    r = await harness.client.get("/api/audit")
    assert r.status_code == 401
    for bad in ("?limit=0", "?limit=1001", "?limit=x", "?after=-1", "?changeId=nope"):
        r = await harness.client.get(f"/api/audit{bad}", headers=_auth(token))
        assert r.status_code == 400, (bad, r.text)


def _failing(s: Session, transitions: Sequence[Transition]) -> None:
    raise RuntimeError("the second recorder failed")


async def test_a_failing_recorder_undoes_the_state_it_records(harness: Harness) -> None:
    """Entries and state commit together: when a recorder of the transaction fails, neither
    the decision (nor its execution) nor the audit entry is there."""
    key, token = await harness.agent_key(), await harness.reviewer_token()
    await harness.project()
    change = await harness.propose(key)
    tenant_id = await _tenant_id(harness)
    before = await harness.runtime.audit.page(_reviewer(tenant_id))
    changes = harness.runtime.changes
    changes.recorders = (audit.record, _failing)
    reviewer = _reviewer(tenant_id)
    with pytest.raises(RuntimeError, match="second recorder"):
        await changes.approve(reviewer, change["id"],
                              {"project_key": "WEB", "title": "Edited"})
    with pytest.raises(RuntimeError, match="second recorder"):
        await changes.reject(reviewer, change["id"], "no")
    agent = await harness.runtime.auth.authenticate(key)
    assert agent is not None
    with pytest.raises(RuntimeError, match="second recorder"):
        await changes.propose(agent, "create_issue", {"project_key": "WEB", "title": "Two"})
    changes.recorders = (audit.record,)

    r = await harness.client.get(f"/api/mcp/pending-changes/{change['id']}",
                                 headers=_auth(token))
    assert r.json()["status"] == "Pending" and r.json()["edited"] is False
    listed = await harness.client.get("/api/mcp/pending-changes", headers=_auth(token))
    assert listed.json()["total"] == 1  # the failed proposal left no row
    projects = await harness.client.get("/api/projects", headers=_auth(token))
    assert projects.json()["items"][0]["issueCount"] == 0  # nothing executed
    assert await harness.runtime.audit.page(reviewer) == before
    assert (await harness.runtime.audit.verify(tenant_id)).ok


def _reviewer(tenant_id: str) -> Principal:
    return Principal(kind="reviewer", tenant_id=tenant_id, tenant_slug="acme", user="alice")


# -- tampering, done with SQL on the database ----------------------------------------------

Tamper = Callable[[str], list[tuple[str, dict[str, Any]]]]


def _forged(prev: str, seq: int, at: str) -> tuple[str, dict[str, Any]]:
    """An entry whose own hash is right: what a forger who knows the formula writes."""
    data = {"reason": "forged"}
    actor = {"type": "reviewer", "id": "eve", "name": "eve"}
    body = {"seq": seq, "at": at, "actor": actor, "action": "change.rejected",
            "changeId": None, "data": data}
    digest = audit.chain_hash(prev, body)
    return digest, {"seq": seq, "data": data, "prev": prev, "hash": digest}


_INSERT = ("INSERT INTO audit_entry (tenant_id, seq, at, actor_type, actor_id, actor_name, "
           "action, change_id, data, prev_hash, hash) SELECT tenant_id, :seq, at, "
           "'reviewer', 'eve', 'eve', 'change.rejected', NULL, :data, :prev, :hash "
           "FROM audit_entry WHERE tenant_id = :t AND seq = 1")

# (kind, SQL statements with parameters, the seq verify must name, a word of its message)
TAMPERING: dict[str, tuple[list[tuple[str, dict[str, Any]]], int, str]] = {
    "edited data": ([("UPDATE audit_entry SET data = :d WHERE tenant_id = :t AND seq = 7",
                      {"d": {"reason": "fine by me"}})], 7, "edited"),
    "edited actor": ([("UPDATE audit_entry SET actor_name = 'bob', actor_id = 'bob' "
                       "WHERE tenant_id = :t AND seq = 5", {})], 5, "edited"),
    "edited action": ([("UPDATE audit_entry SET action = 'change.rejected' "
                        "WHERE tenant_id = :t AND seq = 5", {})], 5, "edited"),
    "deleted entry": ([("DELETE FROM audit_entry WHERE tenant_id = :t AND seq = 4", {})],
                      4, "missing"),
    "deleted last entry": ([("DELETE FROM audit_entry WHERE tenant_id = :t AND seq = 9", {})],
                           9, "missing"),
    "reordered entries": ([
        ("UPDATE audit_entry SET seq = 100 WHERE tenant_id = :t AND seq = 6", {}),
        ("UPDATE audit_entry SET seq = 6 WHERE tenant_id = :t AND seq = 7", {}),
        ("UPDATE audit_entry SET seq = 7 WHERE tenant_id = :t AND seq = 100", {})],
        6, "prevHash"),
}


async def _apply(h: Harness, statements: list[tuple[str, dict[str, Any]]],
                 tenant_id: str) -> None:
    async with h.runtime.db.write() as s:
        for sql, params in statements:
            # JSON values bound as JSON (each engine's own encoding), the rest as they are.
            typed = [bindparam(k, v, type_=JSON) if isinstance(v, dict) else bindparam(k, v)
                     for k, v in {**params, "t": tenant_id}.items()]
            await s.exec(text(sql).bindparams(*typed))  # type: ignore[call-overload]


@pytest.mark.parametrize("kind", sorted(TAMPERING))
async def test_verify_names_the_first_tampered_entry(harness: Harness, kind: str) -> None:
    await _story(harness)
    tenant_id = await _tenant_id(harness)
    statements, seq, word = TAMPERING[kind]
    await _apply(harness, statements, tenant_id)
    verdict = await harness.runtime.audit.verify(tenant_id)
    assert (verdict.ok, verdict.broken_seq) == (False, seq), verdict
    assert word in (verdict.problem or "") and f"seq {seq}" in verdict.describe()


async def test_verify_finds_an_entry_forged_onto_the_end(harness: Harness) -> None:
    """A well-formed entry (right prevHash, right hash) appended behind the head's back."""
    await _story(harness)
    tenant_id = await _tenant_id(harness)
    entries = (await harness.runtime.audit.page(_reviewer(tenant_id)))["entries"]
    # (The forger's INSERT copies seq 1's time.)
    _, forged = _forged(entries[-1]["hash"], 10, entries[0]["at"])
    await _apply(harness, [(_INSERT, forged)], tenant_id)
    verdict = await harness.runtime.audit.verify(tenant_id)
    assert (verdict.ok, verdict.broken_seq) == (False, 10) and "inserted" in str(verdict.problem)


async def test_verify_finds_an_entry_forged_into_the_middle(harness: Harness) -> None:
    """Later entries renumbered to make room, the head moved too: the entry after the
    forged one no longer links to its predecessor."""
    await _story(harness)
    tenant_id = await _tenant_id(harness)
    entries = (await harness.runtime.audit.page(_reviewer(tenant_id)))["entries"]
    _, forged = _forged(entries[3]["hash"], 5, entries[0]["at"])
    await _apply(harness, [
        ("UPDATE audit_entry SET seq = seq + 1000 WHERE tenant_id = :t AND seq >= 5", {}),
        ("UPDATE audit_entry SET seq = seq - 999 WHERE tenant_id = :t AND seq > 1000", {}),
        (_INSERT, forged),
        ("UPDATE audit_head SET seq = 10 WHERE tenant_id = :t", {}),
    ], tenant_id)
    verdict = await harness.runtime.audit.verify(tenant_id)
    # The forged entry itself is consistent: the break shows right after it.
    assert (verdict.ok, verdict.broken_seq) == (False, 6) and "prevHash" in str(verdict.problem)


async def test_an_empty_trail_verifies(harness: Harness) -> None:
    async with harness.runtime.db.write() as s:
        tenant = Tenant(slug="quiet", name="quiet")
        s.add(tenant)
    verdict = await harness.runtime.audit.verify(tenant.id)
    assert verdict.ok and verdict.describe() == "ok: 0 entries"
