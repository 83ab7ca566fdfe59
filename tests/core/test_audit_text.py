"""An audit entry's hash computed from the canonical texts of its parts (domain/audit.py:
``_chained``, so the data is encoded once) equals the contract's formula over the whole
entry (``chain_hash`` of ``_body``), for any actor, action, change id and data; and on
SQLite the entry's data is stored as that canonical text, as on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from colaflow_mcp.domain import audit
from colaflow_mcp.domain.recording import Actor, Transition
from colaflow_mcp.domain.representation import iso
from tests.harness import Harness, fast_settings, in_process

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
_actor = st.builds(Actor, st.sampled_from(["agent", "reviewer", "system", "operator"]),
                   st.text(), st.text())


@given(prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
       seq=st.integers(1, 2**62), at=st.datetimes(min_value=datetime(2000, 1, 1)),
       actor=_actor, action=st.text(), change_id=st.none() | st.text(),
       data=st.dictionaries(st.text(), _json, max_size=4))
def test_the_hash_from_the_parts_texts_is_the_contracts(
        prev: str, seq: int, at: datetime, actor: Actor, action: str, change_id: str | None,
        data: dict[str, Any]) -> None:
    change = None if change_id is None else SimpleNamespace(id=change_id)
    t = Transition(action, "tenant", actor, change, data)  # type: ignore[arg-type]
    at_text = iso(at)
    assert audit._chained(prev, seq, audit.canonical(at_text), t, audit.canonical(data)) == \
        audit.chain_hash(prev, audit._body(seq, at_text, actor.to_json(), action, change_id,
                                           data))


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    async with in_process(fast_settings(database_url)) as h:
        yield h


@pytest.mark.anyio
async def test_an_entrys_data_is_stored_as_the_text_its_hash_covers(harness: Harness) -> None:
    h = harness
    if not h.runtime.db.is_sqlite:
        pytest.skip("SQLite's audit insert (PostgreSQL's decision appends: test_decide_one)")
    key = await h.agent_key()
    token = await h.reviewer_token()
    await h.project()
    change = await h.propose(key, arguments={"project_key": "WEB", "title": "Ünïcode \"q\""})
    r = await h.client.post(f"/api/mcp/pending-changes/{change['id']}/approve",
                            headers={"Authorization": f"Bearer {token}"}, json={})
    assert r.status_code == 200, r.text
    async with h.runtime.db.read() as s:
        rows = (await s.exec(text(  # type: ignore[call-overload]
            "SELECT action, CAST(data AS TEXT) FROM audit_entry ORDER BY seq"))).all()
    assert [a for a, _ in rows] == ["key.created", "change.proposed", "change.approved",
                                    "change.executed"]
    for _, stored in rows:
        assert stored == audit.canonical(json.loads(stored)), stored
    tenant_id = (await h.runtime.auth.authenticate(key)).tenant_id  # type: ignore[union-attr]
    assert (await h.runtime.audit.verify(tenant_id)).ok
