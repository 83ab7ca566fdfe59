"""Claiming pending changes: the conditional updates that let exactly one decision win.

Every decision is a conditional UPDATE ``WHERE status = 'Pending'`` (``store.statements``)
RETURNING the row, and only the caller whose statement changed the row goes on
(``domain/changes.py: ChangeService._decide_group``). A group's plain decisions are claimed
set-wise: on PostgreSQL with one statement for all (``NATIVE_LOCK_HEAD_CLAIM_MANY``), on
SQLite with one statement per set of alike decisions (``statements.claim_set``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from colaflow_mcp.domain import audit
from colaflow_mcp.domain.operations.base import Plan
from colaflow_mcp.domain.recording import Actor
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.native import Native, native
from colaflow_mcp.store.tables import PendingChange, Status, new_pending_change, utcnow


@dataclass(frozen=True)
class Edit:
    """A reviewer's arguments for a change, validated and planned like a proposal."""

    arguments: dict[str, Any]
    plan: Plan


@dataclass(frozen=True, eq=False)
class Decision:
    """One decision waiting for its transaction (see ``domain/changes.py:
    ChangeService._decide_group``)."""

    cid: str
    status: Status
    by: str | None
    reason: str | None
    actor: Actor
    only_overdue: bool = False  # an expiry: only once the deadline passed
    edit: Edit | None = None  # an approval with the reviewer's arguments


def _claim(
    s: Session, tenant_id: str, cid: str, status: Status, by: str | None,
    reason: str | None, only_overdue: bool = False, edit: Edit | None = None,
) -> PendingChange | None:
    """The conditional update that lets exactly one decision win; RETURNING the row (as a
    detached ``PendingChange``), or None if another decision got there first. A reviewer's
    edit is written by the same statement."""
    params: dict[str, Any] = {
        "p_id": cid, "p_tenant": tenant_id, "p_now": utcnow(), "p_status": status.value,
        "p_by": by, "p_reason": reason}
    if edit is not None:
        stmt = statements.CLAIM_EDITED
        params.update(p_arguments=edit.arguments, p_diff=edit.plan.diff,
                      p_summary=edit.plan.summary[:500], p_entity=edit.plan.entity_id)
    else:
        stmt = statements.CLAIM_OVERDUE if only_overdue else statements.CLAIM
    # On SQLite's own cursor, the row made as the ORM loads one: ~8 % of a served
    # approval's CPU went to the model's constructor (benchmarks/RESULTS.md).
    rows = prepared.run(s.connection(), stmt, params)
    return new_pending_change(**dict(zip(statements.PC_KEYS, rows[0], strict=True))
                              ) if rows else None


def claim_all(s: Session, tenant_id: str, items: list[Decision]
              ) -> list[PendingChange | None]:
    """:func:`_claim` for each of a transaction's decisions, the plain ones (no edit)
    set-wise: on PostgreSQL with one statement (``NATIVE_CLAIM_MANY``), on SQLite with one
    per set of alike decisions (:func:`_claim_sets`). A change decided twice in one
    transaction is claimed again after its first claim, as if one after the other: the
    second loses unless the first did not apply (an approval of an overdue change, then
    its expiry).

    On PostgreSQL the tenant's chain head is locked before any change row (one lock order
    for every decision transaction of a tenant, on any instance, so two of them never
    deadlock): by the first set-wise claim itself
    (``NATIVE_LOCK_HEAD_CLAIM_MANY``, one round trip), or by ``audit.lock_chains`` first
    when the first round has only edited approvals."""
    out: list[PendingChange | None] = [None] * len(items)
    remaining = list(range(len(items)))
    # Set-wise on PostgreSQL (one round trip). On SQLite one ``UPDATE … WHERE id IN
    # (…)`` per set of alike decisions: no round trip to save there, but a statement's own
    # cost on the worker thread (an ``UPDATE … FROM`` a JSON list measured slower: its
    # plan read the tenant's changes; this one reads the ids' primary keys).
    fast = native(s.connection())
    head_locked = fast is None  # SQLite: one writer, nothing to order
    while remaining:
        seen: set[str] = set()
        now_round: list[int] = []
        later: list[int] = []
        for i in remaining:
            (later if items[i].cid in seen else now_round).append(i)
            seen.add(items[i].cid)
        plain = [i for i in now_round if items[i].edit is None] if fast is not None else []
        if fast is not None and plain:
            for i, change in zip(plain, _claim_many(
                    s, fast, tenant_id, [items[i] for i in plain], lock_head=not head_locked),
                    strict=True):
                out[i] = change
            head_locked = True
        elif not head_locked:
            audit.lock_chains(s, tenant_id)
            head_locked = True
        if fast is None:  # SQLite: alike plain decisions with one statement each set
            plain = _claim_sets(s, tenant_id, items, now_round, out)
        claimed = set(plain)
        for i in now_round:
            d = items[i]
            if i not in claimed:
                out[i] = _claim(s, tenant_id, d.cid, d.status, d.by, d.reason,
                                d.only_overdue, edit=d.edit)
        remaining = later
    return out


def _claim_sets(s: Session, tenant_id: str, items: list[Decision], indexes: list[int],
                out: list[PendingChange | None]) -> list[int]:
    """SQLite: the round's plain decisions (distinct ids, no edit) that share their
    decision (status, decider, reason, deadline test), two or more alike, each set claimed
    with one statement (``statements.claim_set``: CLAIM's conditions per row, one ``now``
    for all); their rows into ``out``; the indexes it claimed (won or lost)."""
    alike: dict[tuple[str, str | None, str | None, bool], list[int]] = {}
    for i in indexes:
        d = items[i]
        if d.edit is None:
            alike.setdefault((d.status.value, d.by, d.reason, d.only_overdue), []).append(i)
    done: list[int] = []
    for (status, by, reason, only_overdue), members in alike.items():
        if len(members) < 2:
            continue
        params: dict[str, Any] = {
            "p_tenant": tenant_id, "p_now": utcnow(), "p_status": status, "p_by": by,
            "p_reason": reason}
        params.update((f"p_id{k}", items[i].cid) for k, i in enumerate(members))
        rows = prepared.run(s.connection(), statements.claim_set(only_overdue, len(members)),
                            params)
        won = {row[0]: row for row in rows}  # RETURNING's first column is the id
        for i in members:
            row = won.get(items[i].cid)
            out[i] = None if row is None else new_pending_change(
                **dict(zip(statements.PC_KEYS, row, strict=True)))
        done += members
    return done


def _claim_many(s: Session, fast: Native, tenant_id: str, items: list[Decision],
                lock_head: bool = False) -> list[PendingChange | None]:
    """One statement deciding several changes (distinct ids, no edits; PostgreSQL): each
    one's row, or None where another decision got there first. ``lock_head``: the same
    statement locks the tenant's chain head first and notes it (``audit.hold``)."""
    args = (tenant_id, utcnow(), [d.cid for d in items], [d.status.value for d in items],
            [d.by for d in items], [d.reason for d in items],
            [d.only_overdue for d in items])
    if not lock_head:
        rows = fast.fetch(statements.NATIVE_CLAIM_MANY, *args)
        won = {row["id"]: new_pending_change(**dict(row.items())) for row in rows}
        return [won.get(d.cid) for d in items]
    rows = fast.fetch(statements.NATIVE_LOCK_HEAD_CLAIM_MANY, *args)
    head_seq, head_hash = rows[0]["head_seq"], rows[0]["head_hash"]
    if head_seq is not None:  # appended later without reading it again
        audit.hold(s, tenant_id, int(head_seq), str(head_hash))
    won = {}
    for row in rows:
        if row["id"] is not None:
            fields = dict(row.items())
            del fields["head_seq"], fields["head_hash"]
            won[row["id"]] = new_pending_change(**fields)
    return [won.get(d.cid) for d in items]


__all__ = ["Decision", "Edit", "claim_all"]
