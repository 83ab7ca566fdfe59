"""Exactly one decision wins, in one process and across two processes, edited approvals
included; the audit trail records the one decision."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from sqlalchemy import update
from sqlmodel import col

from colaflow_mcp.store.tables import PendingChange, utcnow
from tests.harness import Harness

pytestmark = pytest.mark.anyio


async def _make_due_change(h: Harness) -> tuple[str, str]:
    key = await h.agent_key()
    await h.project()
    c = await h.propose(key)
    principal = await h.runtime.auth.authenticate(key)
    assert principal is not None
    return c["id"], principal.tenant_id


async def _set_expiry(h: Harness, change_id: str, seconds_from_now: float) -> None:
    async with h.runtime.db.write() as s:
        await s.exec(update(PendingChange).where(col(PendingChange.id) == change_id)
                     .values(expires_at=utcnow() + timedelta(seconds=seconds_from_now)))


async def test_fifty_concurrent_decisions_in_one_process_have_one_winner(
    harness: Harness,
) -> None:
    change_id, _ = await _make_due_change(harness)
    token = await harness.reviewer_token()
    await _set_expiry(harness, change_id, 0.3)
    statuses: list[int] = []

    async def attempt(i: int) -> None:
        if i % 3 == 0:
            r = await harness.approve(token, change_id)
        elif i % 3 == 1:
            r = await harness.reject(token, change_id, f"attempt {i}")
        else:
            await harness.runtime.changes.expire_due()
            return
        statuses.append(r.status_code)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(attempt, i)
    r = await harness.client.get(f"/api/mcp/pending-changes/{change_id}",
                                 headers={"Authorization": f"Bearer {token}"})
    final = r.json()["status"]
    assert final in ("Approved", "Rejected", "Expired")
    wins = statuses.count(200)
    assert statuses.count(409) == len(statuses) - wins
    assert wins == (0 if final == "Expired" else 1)
    if final == "Approved":
        r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
        assert r.json()["items"][0]["issueCount"] == 1  # executed exactly once


async def _one_decision_recorded(h: Harness, change_id: str, tenant_id: str, final: str
                                 ) -> list[dict[str, Any]]:
    """The change's audit entries: its proposal and exactly the winning decision."""
    token = await h.reviewer_token()
    r = await h.client.get(f"/api/audit?changeId={change_id}",
                           headers={"Authorization": f"Bearer {token}"})
    entries: list[dict[str, Any]] = r.json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions == ["change.proposed", f"change.{final.lower()}"] + (
        ["change.executed"] if final == "Approved" else []), actions
    assert (await h.runtime.audit.verify(tenant_id)).ok
    return entries


async def test_edited_approvals_racing_every_other_decision_have_one_winner(
    harness: Harness,
) -> None:
    """Edit-approves (each with its own title) race plain approves, rejects and the expiry:
    one wins, and what was applied is exactly the winner's."""
    change_id, tenant_id = await _make_due_change(harness)
    token = await harness.reviewer_token()
    await _set_expiry(harness, change_id, 0.3)
    outcomes: dict[int, int] = {}

    async def attempt(i: int) -> None:
        if i % 4 == 0:
            r = await harness.client.post(
                f"/api/mcp/pending-changes/{change_id}/approve",
                json={"arguments": {"project_key": "WEB", "title": f"edited {i}"}},
                headers={"Authorization": f"Bearer {token}"})
        elif i % 4 == 1:
            r = await harness.approve(token, change_id)
        elif i % 4 == 2:
            r = await harness.reject(token, change_id, f"attempt {i}")
        else:
            await harness.runtime.changes.expire_due()
            return
        outcomes[i] = r.status_code

    async with anyio.create_task_group() as tg:
        for i in range(48):
            tg.start_soon(attempt, i)
    auth = {"Authorization": f"Bearer {token}"}
    change = (await harness.client.get(f"/api/mcp/pending-changes/{change_id}",
                                       headers=auth)).json()
    final = change["status"]
    winners = [i for i, code in outcomes.items() if code == 200]
    assert all(code in (200, 409) for code in outcomes.values()), outcomes
    assert len(winners) == (0 if final == "Expired" else 1), (final, outcomes)
    entries = await _one_decision_recorded(harness, change_id, tenant_id, final)
    if final != "Approved":
        assert change["edited"] is False and change["arguments"] == change["proposedArguments"]
        return
    [winner] = winners
    title = f"edited {winner}" if winner % 4 == 0 else "Fix the login page"
    assert change["edited"] is (winner % 4 == 0) and change["arguments"]["title"] == title
    assert change["proposedArguments"]["title"] == "Fix the login page"
    assert entries[1]["data"]["edited"] is change["edited"]
    r = await harness.client.get("/api/issues/WEB-1", headers=auth)
    assert r.json()["title"] == title  # the winner's arguments, applied once
    r = await harness.client.get("/api/projects", headers=auth)
    assert r.json()["items"][0]["issueCount"] == 1


async def test_fifty_attempts_from_two_processes_have_one_winner(harness: Harness) -> None:
    change_id, tenant_id = await _make_due_change(harness)
    url = harness.settings.database_url
    results: list[dict[str, Any]] = []
    cmd = [sys.executable, "-m", "tests.core.race_worker", url, change_id, tenant_id, "acme",
           "25"]
    with anyio.fail_after(60):
        async with await anyio.open_process(cmd) as w1, await anyio.open_process(cmd) as w2:
            workers = [w1, w2]
            outputs = [TextReceiveStream(w.stdout) for w in workers]  # type: ignore[arg-type]
            buffers = ["", ""]

            async def line(i: int) -> str:
                while "\n" not in buffers[i]:
                    try:
                        buffers[i] += await outputs[i].receive()
                    except anyio.EndOfStream:
                        # The worker died: say why (its traceback), not just that it ended.
                        assert workers[i].stderr is not None
                        err = b""
                        with anyio.move_on_after(5):
                            async for chunk in workers[i].stderr:
                                err += chunk
                        pytest.fail(f"race worker {i} ended early:\n{err.decode(errors='replace')}")
                first, buffers[i] = buffers[i].split("\n", 1)
                return first

            for i in range(2):
                assert await line(i) == "ready"
            # Both are set up: start them together, with the deadline in the middle of the
            # storm, so expiry races too.
            await _set_expiry(harness, change_id, 0.05)
            for w in workers:
                assert w.stdin is not None
                await w.stdin.send(b"go\n")
            results.extend([json.loads(await line(0)), json.loads(await line(1))])
    won = [w for r in results for w in r["won"]]
    token = await harness.reviewer_token()
    r = await harness.client.get(f"/api/mcp/pending-changes/{change_id}",
                                 headers={"Authorization": f"Bearer {token}"})
    final = r.json()["status"]
    # The app's own expiry loop is a third contender: it may be the one that expired it.
    assert len(won) <= 1, results
    assert won == [final] or (won == [] and final == "Expired"), (final, results)
    conflicts = sum(n for r in results for n in r["conflicts"].values())
    approve_reject_attempts = sum(1 for i in range(25) if i % 3 != 2) * 2
    assert conflicts == approve_reject_attempts - (1 if final != "Expired" else 0)
    r = await harness.client.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["items"][0]["issueCount"] == (1 if final == "Approved" else 0)
    # Half the approvals were edited (each with its worker's own title): the applied
    # arguments are one winner's, and the trail has the one decision.
    change = (await harness.client.get(f"/api/mcp/pending-changes/{change_id}",
                                           headers={"Authorization": f"Bearer {token}"})).json()
    if final == "Approved":
        title = change["arguments"]["title"]
        assert change["edited"] is title.startswith("edited by")
        issue = await harness.client.get("/api/issues/WEB-1",
                                         headers={"Authorization": f"Bearer {token}"})
        assert issue.json()["title"] == title
    await _one_decision_recorded(harness, change_id, tenant_id, final)
