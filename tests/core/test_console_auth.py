"""Console sign-in in the domain: a link works once (also when opened twice at the same
moment), sessions end, nothing secret is stored; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import anyio
import pytest
from sqlmodel import select

from colaflow_mcp.domain import admin
from colaflow_mcp.domain.console import LinkRefused, Opened
from colaflow_mcp.store.tables import ConsoleSession, LoginLink
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def test_a_link_opened_twice_at_once_signs_in_exactly_once(harness: Harness) -> None:
    auth = harness.runtime.console.auth
    tenant = await admin.get_or_create_tenant(harness.runtime.db, "acme")
    token = await auth.create_link(tenant, "alice", 15)
    won: list[Opened] = []
    refused: list[LinkRefused] = []

    async def open_it() -> None:
        try:
            won.append(await auth.open_link(token))
        except LinkRefused as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(open_it)
    assert (len(won), len(refused)) == (1, 3)
    session = await auth.session(won[0].cookie)
    assert session is not None
    assert (session.principal.user, session.principal.tenant_slug) == ("alice", "acme")
    assert session.principal.kind == "reviewer"


async def test_only_hashes_are_stored_and_log_out_ends_the_session(harness: Harness) -> None:
    auth = harness.runtime.console.auth
    tenant = await admin.get_or_create_tenant(harness.runtime.db, "acme")
    token = await auth.create_link(tenant, "alice", 15)
    opened = await auth.open_link(token)
    async with harness.runtime.db.read() as s:
        links = (await s.exec(select(LoginLink))).all()
        sessions = (await s.exec(select(ConsoleSession))).all()
    assert [r.token_hash for r in links] == [hashlib.sha256(token.encode()).hexdigest()]
    assert [r.id_hash for r in sessions] == [
        hashlib.sha256(opened.cookie.encode()).hexdigest()]
    await auth.end(opened.cookie)
    assert await auth.session(opened.cookie) is None
    assert await auth.session("not-a-session") is None
    with pytest.raises(LinkRefused):
        await auth.open_link("x" * 500)


async def test_bad_link_requests_are_refused(harness: Harness) -> None:
    auth = harness.runtime.console.auth
    tenant = await admin.get_or_create_tenant(harness.runtime.db, "acme")
    for user, minutes in (("", 15), ("a" * 201, 15), ("alice", 0), ("alice", 1441),
                          ("bad\nname", 15)):
        with pytest.raises(ValueError):
            await auth.create_link(tenant, user, minutes)
