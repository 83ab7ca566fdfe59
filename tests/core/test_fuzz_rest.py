"""Property: no REST request, however malformed, gets a 5xx, logs an error, hurts /health or
changes a stored decision — for agents, reviewers, foreigners and strangers alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colaflow_mcp.store.tables import Status
from tests.fuzz import (
    ARG_NAMES,
    EDGE_INTS,
    EDGE_NUMBERS,
    HUGE_INTS,
    JSON_VALUES,
    PLAUSIBLE,
    SCALARS,
    TOOL_NAMES,
    Decision,
    Seed,
    arguments,
    assert_clear_error,
    assert_sound,
    decisions,
    dumps,
    fuzz_settings,
    seed,
)
from tests.harness import Harness, fast_settings, in_process

pytestmark = pytest.mark.anyio
BASE = "/api/mcp/pending-changes"
# (method, path template): every REST route.
ROUTES = [("GET", BASE), ("POST", BASE), ("GET", BASE + "/{id}"),
          ("POST", BASE + "/{id}/approve"), ("POST", BASE + "/{id}/reject"),
          ("GET", "/api/projects"), ("GET", "/api/issues/{key}"), ("GET", "/health")]
CALLERS = ["agent", "reviewer", "foreign agent", "foreign reviewer", "nobody"]
VALID_ARGS: dict[str, dict[str, Any]] = {
    "create_project": {"key": "NEW", "name": "New"},
    "create_issue": {"project_key": "WEB", "title": "Fix it"},
    "update_issue": {"issue_key": "WEB-1", "title": "Renamed"},
    "update_status": {"issue_key": "WEB-1", "status": "Done"},
    "add_comment": {"issue_key": "WEB-1", "body": "Looks good"},
    "delete_issue": {"issue_key": "WEB-1"},
    "update_project": {"project_key": "WEB", "name": "Web"},
    "delete_project": {"project_key": "WEB"},
    "update_comment": {"comment_id": "nope", "body": "edited"},
    "delete_comment": {"comment_id": "nope"},
}


@dataclass
class Env:
    h: Harness
    seed: Seed
    before: dict[str, Decision]


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    async with in_process(fast_settings(database_url)) as h:
        s = await seed(h.runtime)
        yield Env(h, s, await decisions(h.runtime))


# Stand-ins for the seeded ids and credentials, resolved when sending: a strategy must not
# depend on state a fixture made.
ID_REFS = [f"{group}:{i}" for group, n in (("pending", 3), ("decided", 3), ("foreign", 2))
           for i in range(n)]
BAD_CREDENTIALS = ["cola_" + "A" * 43, "cola_", "a.b.c", "Bearer", "x" * 5000]


@dataclass(frozen=True)
class Req:
    """A drawn request; ``path`` is a route template, ``id`` and ``caller`` may be stand-ins."""

    method: str
    path: str
    id: str = "pending:0"
    key: str = "WEB-1"
    query: str = ""
    caller: str = "agent"
    header: str = "Authorization"
    content_type: str | None = "application/json"
    content: bytes | None = None


def callers(*likely: str) -> st.SearchStrategy[str]:
    """Mostly ``likely``, sometimes anyone else or a bad credential."""
    return st.sampled_from([*likely] * 8 + CALLERS + BAD_CREDENTIALS)


def garbage_bodies() -> st.SearchStrategy[bytes | None]:
    nested = st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
    return st.one_of(st.none(), JSON_VALUES.map(lambda v: dumps(v).encode()),
                     st.binary(max_size=200), nested)


def propose_bodies() -> st.SearchStrategy[bytes]:
    """A valid proposal with a field or two replaced by garbage, maybe an odd expiry."""
    def build(tool: str, overrides: dict[str, Any], extra: dict[str, Any]) -> bytes:
        return dumps({"tool": tool, "arguments": {**VALID_ARGS[tool], **overrides},
                      **extra}).encode()

    expiry = st.fixed_dictionaries({}, optional={
        "expiresInSeconds": st.one_of(EDGE_NUMBERS, SCALARS)})
    overrides = st.dictionaries(st.sampled_from(ARG_NAMES), st.one_of(PLAUSIBLE, JSON_VALUES),
                                min_size=1, max_size=2)
    free = st.fixed_dictionaries({"tool": TOOL_NAMES, "arguments": arguments()})
    return st.one_of(st.builds(build, st.sampled_from(sorted(VALID_ARGS)), overrides, expiry),
                     free.map(lambda v: dumps(v).encode()))


def reject_bodies() -> st.SearchStrategy[bytes | None]:
    reason = st.fixed_dictionaries({}, optional={"reason": st.one_of(PLAUSIBLE, JSON_VALUES)})
    return st.one_of(reason.map(lambda v: dumps(v).encode()), garbage_bodies())


PAGING = st.one_of(EDGE_INTS.map(str), HUGE_INTS.map(str), EDGE_NUMBERS.map(str),
                   st.sampled_from(["100", "101", "1000000", "1000001", "-0", "1e3", " 2 ",
                                    "1_000", "\u0663"]), st.text(max_size=20))


def paging_queries() -> st.SearchStrategy[str]:
    """Valid paging with one parameter (at most) replaced by an odd value."""
    statuses = st.sampled_from([s.value for s in Status])
    valid = st.fixed_dictionaries({}, optional={
        "page": st.integers(1, 5).map(str), "pageSize": st.integers(1, 100).map(str),
        "status": statuses})
    odd = st.dictionaries(st.sampled_from(["page", "pageSize"] * 2 + ["status", "x"]), PAGING,
                          min_size=1, max_size=1)
    return st.builds(lambda v, o: urlencode({**v, **o}), valid, odd)


def query_strings() -> st.SearchStrategy[str]:
    value = st.one_of(EDGE_NUMBERS.map(str), st.sampled_from([s.value for s in Status]),
                      st.text(max_size=30))
    params = st.dictionaries(st.sampled_from(["page", "pageSize", "status", "x"]), value,
                             min_size=1, max_size=3)
    raw = st.text(max_size=60).map(lambda t: quote(t, safe="=&"))
    return st.one_of(params.map(urlencode), raw)


ids = st.one_of(st.sampled_from(ID_REFS), st.text(min_size=1, max_size=50))
headers = st.sampled_from(["Authorization", "X-API-Key"])
content_types = st.sampled_from(["application/json", "text/plain", None])


@st.composite
def any_requests(draw: st.DrawFn) -> Req:
    """Any route, mostly with its own method, any caller, any query string and body."""
    method, path = draw(st.sampled_from(ROUTES))
    method = draw(st.sampled_from([method] * 6 + ["GET", "POST", "PUT", "DELETE"]))
    body = (propose_bodies() if (method, path) == ("POST", BASE)
            else reject_bodies() if path.endswith("/reject") else garbage_bodies())
    return Req(method, path, id=draw(ids), key=draw(st.one_of(
        st.sampled_from(["WEB-1", "web-1", "WEB-99"]), st.text(min_size=1, max_size=30))),
        query=draw(query_strings()), caller=draw(callers(*CALLERS)), header=draw(headers),
        content_type=draw(content_types), content=draw(st.one_of(body, garbage_bodies())))


def proposals() -> st.SearchStrategy[Req]:
    return st.builds(Req, st.just("POST"), st.just(BASE), caller=callers("agent"),
                     header=headers, content_type=content_types,
                     content=st.one_of(propose_bodies(), garbage_bodies()))


def listings() -> st.SearchStrategy[Req]:
    return st.builds(Req, st.just("GET"), st.just(BASE), query=paging_queries(),
                     caller=callers("agent", "reviewer"), header=headers)


def decisions_() -> st.SearchStrategy[Req]:
    return st.builds(Req, st.just("POST"), st.sampled_from([f"{BASE}/{{id}}/approve",
                                                           f"{BASE}/{{id}}/reject"]),
                     id=ids, caller=callers("reviewer"), header=headers,
                     content_type=content_types, content=reject_bodies())


async def send_and_check(env: Env, req: Req, caplog: pytest.LogCaptureFixture
                         ) -> httpx.Response:
    """Send ``req`` with the seeded values filled in; then the properties must hold."""
    s = env.seed
    group, _, index = req.id.partition(":")
    change_id = getattr(s, group)[int(index)] if req.id in ID_REFS else req.id
    path = req.path.format(id=quote(change_id, safe=""), key=quote(req.key, safe=""))
    credential = {"agent": s.agent_key, "reviewer": s.reviewer_token,
                  "foreign agent": s.foreign_key, "foreign reviewer": s.foreign_token,
                  "nobody": None}.get(req.caller, req.caller)
    sent: dict[str, str] = {}
    if credential is not None:
        sent[req.header] = (f"Bearer {credential}" if req.header == "Authorization"
                            else credential)
    if req.content_type:
        sent["Content-Type"] = req.content_type
    response = await env.h.client.request(
        req.method, path + ("?" + req.query if req.query else ""), content=req.content,
        headers=sent)
    assert_clear_error(response, s.secrets)
    await assert_sound(env.h.client, env.h.runtime, env.before, caplog)
    return response


@fuzz_settings(60)
@given(expiry=st.one_of(EDGE_NUMBERS, SCALARS, JSON_VALUES))
async def test_any_expiry_is_honoured_within_the_ttl_or_refused(
    env: Env, caplog: pytest.LogCaptureFixture, expiry: Any
) -> None:
    body = {"tool": "create_issue", "arguments": VALID_ARGS["create_issue"],
            "expiresInSeconds": expiry}
    r = await send_and_check(env, Req("POST", BASE, content=dumps(body).encode()), caplog)
    assert r.status_code in (201, 400), r.text
    if r.status_code == 201:
        change = r.json()
        assert not isinstance(expiry, bool)  # null is "not given": the server's TTL
        window = (datetime.fromisoformat(change["expiresAt"])
                  - datetime.fromisoformat(change["createdAt"])).total_seconds()
        assert 0 <= window <= env.h.settings.pending_change_ttl_seconds + 0.001


@fuzz_settings(60)
@given(req=proposals())
async def test_garbage_proposals_get_clear_4xx(env: Env, caplog: pytest.LogCaptureFixture,
                                                 req: Req) -> None:
    await send_and_check(env, req, caplog)


@fuzz_settings(60)
@given(req=listings())
async def test_any_paging_is_answered_or_refused_with_400(
    env: Env, caplog: pytest.LogCaptureFixture, req: Req
) -> None:
    r = await send_and_check(env, req, caplog)
    if r.status_code == 200:
        assert len(r.json()["items"]) <= r.json()["pageSize"] <= 100


@fuzz_settings(50)
@given(req=decisions_())
async def test_garbage_decisions_never_change_a_decided_change(
    env: Env, caplog: pytest.LogCaptureFixture, req: Req
) -> None:
    await send_and_check(env, req, caplog)


@fuzz_settings(100)
@given(req=any_requests())
async def test_any_route_method_caller_query_and_body_gets_no_5xx(
    env: Env, caplog: pytest.LogCaptureFixture, req: Req
) -> None:
    await send_and_check(env, req, caplog)
