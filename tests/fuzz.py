"""The property-based suite's shared parts: example budget, JSON garbage, a seeded tenant and
the checks every example must pass (no 5xx, no logged error, healthy, decisions intact).

Example counts are small so the suite runs in seconds; ``COLAFLOW_TEST_FUZZ_SCALE=50``
multiplies them for a long hunt.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import col, select

from colaflow_mcp.domain import admin
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.operations import OPERATIONS as TOOLS
from colaflow_mcp.runtime import Runtime
from colaflow_mcp.store.tables import PendingChange, Status, utcnow

SCALE = max(1, int(os.environ.get("COLAFLOW_TEST_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int) -> settings:
    """``examples`` × the scale; one app serves every example of a test (hence the
    function-scoped fixture is fine), and nothing is written to a .hypothesis folder."""
    return settings(
        max_examples=examples * SCALE, deadline=None, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


# -- garbage ----------------------------------------------------------------------------

# Numbers at the edges: 64-bit limits, beyond them, NaN and the infinities.
EDGE_INTS = st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30,
                             10**400])
# Beyond what a 64-bit OFFSET (page × pageSize) holds.
HUGE_INTS = st.integers(min_value=2**59)
EDGE_NUMBERS = st.one_of(EDGE_INTS, st.integers(), st.floats(allow_nan=True,
                                                             allow_infinity=True))
SCALARS = st.one_of(st.none(), st.booleans(), EDGE_NUMBERS, st.text(max_size=40))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
PLAUSIBLE = st.sampled_from(["WEB", "web", "WEB-1", "WEB-2", "web-1", "NOPE-9", "", " ",
                             "Fix login", "Bug", "High", "Done", "ToDo", "x" * 600])
ARG_NAMES = sorted({name for spec in TOOLS.values() for name in spec.args.model_fields}
                   | {"expires_in_seconds"})
TOOL_NAMES = st.one_of(st.sampled_from(sorted(TOOLS)), st.text(max_size=20))


def arguments() -> st.SearchStrategy[Any]:
    """Mostly objects with real argument names and plausible or garbage values."""
    value = st.one_of(PLAUSIBLE, JSON_VALUES)
    name = st.one_of(st.sampled_from(ARG_NAMES), st.text(max_size=12))
    return st.one_of(st.dictionaries(name, value, max_size=6), JSON_VALUES)


def dumps(value: Any) -> str:
    """JSON as Python writes it: NaN and Infinity literals included, on purpose."""
    return json.dumps(value, allow_nan=True)


# -- a tenant with history --------------------------------------------------------------


@dataclass
class Seed:
    """Credentials and ids of a tenant with decided and pending changes, and of another."""

    agent_key: str
    reviewer_token: str
    foreign_key: str
    foreign_token: str
    pending: list[str] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.pending + self.decided + self.foreign

    @property
    def secrets(self) -> list[str]:
        return [self.agent_key, self.reviewer_token, self.foreign_key, self.foreign_token]


async def seed(svc: Runtime) -> Seed:
    """acme: project WEB, issue WEB-1, one change of each decided status, three pending;
    other: one approved and one pending change."""
    db, changes = svc.db, svc.changes
    tenants = {}
    for slug in ("acme", "other"):
        t = tenants[slug] = await admin.get_or_create_tenant(db, slug)
        await admin.create_project_direct(db, t.id, "WEB", "Website")
    row, agent_key = await admin.create_api_key(db, tenants["acme"], "fuzz")
    frow, foreign_key = await admin.create_api_key(db, tenants["other"], "fuzz")
    agent = Principal("agent", tenants["acme"].id, "acme", api_key_id=row.id)
    reviewer = Principal("reviewer", tenants["acme"].id, "acme", user="rita")
    foreign_agent = Principal("agent", tenants["other"].id, "other", api_key_id=frow.id)
    foreign_reviewer = Principal("reviewer", tenants["other"].id, "other", user="olga")
    s = Seed(agent_key, svc.tokens.issue(tenants["acme"], "rita"), foreign_key,
             svc.tokens.issue(tenants["other"], "olga"))

    async def propose(who: Principal, title: str) -> str:
        c = await changes.propose(who, "create_issue", {"project_key": "WEB", "title": title})
        return c.id

    first = await propose(agent, "Fix login")
    await changes.approve(reviewer, first)  # creates WEB-1
    rejected = await propose(agent, "Rejected one")
    await changes.reject(reviewer, rejected, "not now")
    expired = await propose(agent, "Expired one")
    async with db.write() as session:
        await session.exec(update(PendingChange)  # type: ignore[call-overload]
                           .where(col(PendingChange.id) == expired)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    await changes.expire_due()
    s.decided += [first, rejected, expired]
    s.pending += [await propose(agent, f"Pending {i}") for i in range(3)]
    foreign_done = await propose(foreign_agent, "Theirs")
    await changes.approve(foreign_reviewer, foreign_done)
    s.foreign += [foreign_done, await propose(foreign_agent, "Theirs, pending")]
    return s


# -- what every example must leave true -------------------------------------------------

Decision = tuple[str, Any, Any, Any, Any, Any]


async def decisions(svc: Runtime) -> dict[str, Decision]:
    """Every decided change, as stored: status, when, by whom, reason, result, entity."""
    async with svc.db.read() as s:
        rows = (await s.exec(select(PendingChange).where(
            col(PendingChange.status) != Status.PENDING.value))).all()
    return {r.id: (r.status, r.decided_at, r.decided_by, r.reason, r.execution_result,
                   r.entity_id) for r in rows}


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def assert_sound(client: httpx.AsyncClient, svc: Runtime, before: dict[str, Decision],
                       caplog: pytest.LogCaptureFixture) -> None:
    """Healthy, nothing logged as an error, and every earlier decision exactly as it was."""
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    no_errors_logged(caplog)
    after = await decisions(svc)
    assert {cid: after.get(cid) for cid in before} == before


def assert_clear_error(response: httpx.Response, secrets: list[str]) -> None:
    """Not a 5xx; our 4xx bodies have the error shape; no credential is echoed."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
            "application/json"):
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
    for secret in secrets:
        assert secret not in response.text
