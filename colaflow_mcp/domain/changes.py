"""The pending-change lifecycle: propose, approve (optionally edited, and execute), reject,
expire.

Exactly one decision wins: every decision is a conditional UPDATE ``WHERE status =
'Pending'`` (``domain/claims.py``: ``store.statements.CLAIM``; for a group of a tenant's
decisions on PostgreSQL one statement for all, on SQLite one per set of alike decisions)
and only the caller whose statement changed the row goes on to announce it. Each proposal
and decision is one synchronous transaction (``Database.transact``) that ends by telling
the recorders (``domain/recording.py``: the audit trail, …) what it did, so their rows
commit with it. Announcing is delivery's job, reached through the :class:`Announcer`
port, so the domain never imports delivery.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import anyio
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from colaflow_mcp.config import Settings
from colaflow_mcp.domain import audit, recording
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.claims import Decision as _Decision
from colaflow_mcp.domain.claims import Edit, claim_all
from colaflow_mcp.domain.decide_one import LOST, Decided, DecideOne, fits
from colaflow_mcp.domain.errors import (
    Conflict,
    ExecutionError,
    Forbidden,
    InvalidArguments,
    NotFound,
    format_validation_error,
)
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.domain.operations import OPERATIONS
from colaflow_mcp.domain.operations.base import Operation
from colaflow_mcp.domain.recording import EXPIRY, Actor, Recorder, Transition
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.groups import GROUPED, TransactionGroups
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import PendingChange, Status, new_pending_change, utcnow

logger = logging.getLogger(__name__)

MAX_RATIONALE = 2000
MAX_REASON = 2000


def positive_seconds(value: object) -> float:
    """A positive, finite number of seconds (``true`` is not 1), or InvalidArguments."""
    message = "expires_in_seconds must be a positive, finite number of seconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArguments(message)
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        raise InvalidArguments(message) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArguments(message)
    return seconds


def rationale_of(value: object) -> str | None:
    """The agent's optional rationale: a string of at most 2,000 characters (blank: none)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArguments("rationale must be a string")
    value = value.strip()
    if len(value) > MAX_RATIONALE:
        raise InvalidArguments(
            f"rationale must be at most {MAX_RATIONALE} characters (got {len(value)})")
    return value or None


_LOST = LOST


def _decided(tenant_id: str, d: _Decision, change: PendingChange,
             result: dict[str, Any] | None) -> Decided:
    """A won decision and the transitions it records."""
    if d.status == Status.APPROVED:
        assert result is not None
        change.execution_result = result
        if result["success"]:
            change.entity_id = result["entityId"]
        approved: dict[str, Any] = {"edited": bool(change.edited)}
        if change.edited:
            approved.update(arguments=change.arguments, summary=change.summary)
        return Decided(change, (
            Transition(recording.APPROVED, tenant_id, d.actor, change, approved),
            Transition(recording.EXECUTED, tenant_id, d.actor, change, result)), result)
    if d.status == Status.REJECTED:
        what = Transition(recording.REJECTED, tenant_id, d.actor, change,
                          {"reason": d.reason})
    else:
        what = Transition(recording.EXPIRED, tenant_id, d.actor, change,
                          {"expiresAt": iso(change.expires_at)})
    return Decided(change, (what,))


@dataclass(frozen=True)
class Proposed:
    """What a proposal's transaction function planned: the new change and its transition
    (inserted and recorded once per transaction, for every proposal sharing it), or the
    caller's InvalidArguments (the plan refused it; nothing of it was written)."""

    change: PendingChange | None
    transition: Transition | None
    error: InvalidArguments | None = None


class Announcer(Protocol):
    """Where a new or decided change goes once its transaction committed (delivery's
    outbox): a new one to review queues, a decided one to its subscribers too."""

    async def announce(self, change: PendingChange) -> None:
        """Deliver locally and queue for the backplane; must not wait on the network."""


class ChangeService:
    """Everything that creates and decides pending changes, tenant-scoped."""

    def __init__(self, db: Database, announcer: Announcer, settings: Settings,
                 recorders: Sequence[Recorder] = (audit.record,)) -> None:
        self.db = db
        self.announcer = announcer
        self.settings = settings
        # Told about every transition inside its transaction (the audit trail first).
        self.recorders: Sequence[Recorder] = tuple(recorders)
        self.deadline_changed = anyio.Event()
        self.expiry_planned_at: datetime | None = None  # when the expiry loop wakes next
        # While an expiry pass runs, new deadlines are collected for it to plan with
        # instead of waking it again: under a steady stream of proposals every pass would
        # otherwise be woken during itself and the loop would never rest.
        self._expiry_passing = False
        self._soonest_during_pass: datetime | None = None
        # Concurrent proposals of a tenant share a transaction (group commit): they take
        # turns on its audit chain anyway. One INSERT and one audit append of all their
        # entries, one commit, for whatever arrived while the previous one ran.
        self.proposals: TransactionGroups[Callable[[Session], Proposed], Proposed] = (
            TransactionGroups(db, self._propose_group,
                              max_size=settings.proposal_group_max_size))
        # Concurrent decisions of a tenant too (and its projects' issue numbers); on
        # PostgreSQL a group of plain approvals first in one statement (decide_one.py).
        self.decisions: TransactionGroups[_Decision, Decided] = TransactionGroups(
            db, self._decide_group, max_size=settings.decision_group_max_size,
            first=DecideOne(db) if fits(db, self.recorders) else None)

    def _propose_group(self, s: Session, tenant_id: str,
                       fns: list[Callable[[Session], Proposed]]) -> list[Proposed]:
        """One transaction's proposals of a tenant: each planned in turn, then recorded."""
        proposed = [fn(s) for fn in fns]
        self._record_proposed(s, proposed)
        return proposed

    def _decide_group(self, s: Session, tenant_id: str, items: list[_Decision]
                      ) -> list[Decided]:
        """One transaction's decisions of a tenant, set-wise: its chain head locked first
        (on PostgreSQL by the claim's own statement, ``claims.claim_all``), every change claimed
        with one statement, the approved ones executed (a tool's consecutive executions
        together where it can), then the results and audit entries written once."""
        claimed = claim_all(s, tenant_id, items)
        pairs = list(zip(items, claimed, strict=True))
        results = iter(_execute_all(s, [c for d, c in pairs
                                        if c is not None and d.status == Status.APPROVED]))
        out = [_LOST if c is None else _decided(
            tenant_id, d, c, next(results) if d.status == Status.APPROVED else None)
            for d, c in pairs]
        self._record_decided(s, out)
        return out

    def _record_proposed(self, s: Session, proposed: list[Proposed]) -> None:
        """The new changes of a transaction's proposals, one INSERT for all of them (a
        prebuilt statement, not the ORM's unit of work; the objects are handed on as they
        are, never attached to the session), then their recorders' rows (one audit append
        of all their entries)."""
        made = [p for p in proposed if p.change is not None]
        if not made:
            return
        prepared.run(s.connection(), statements.INSERT_PENDING_CHANGE,
                     [statements.pending_change_row(p.change) for p in made
                      if p.change is not None])
        recording.record(s, self.recorders, *(p.transition for p in made
                                              if p.transition is not None))

    def _record_decided(self, s: Session, decided: list[Decided]) -> None:
        """Execution results and the recorders' rows of a transaction's decisions, each
        written once per transaction (on PostgreSQL the results by the audit append's own
        statement, when it has the head: ``audit.carry_results``)."""
        done = [d for d in decided if d.change is not None and d.result is not None]
        fast = native(s.connection()) if done else None
        transitions = [t for d in decided for t in d.transitions]
        if fast is not None:
            results = ([d.change.id for d in done if d.change is not None],
                       [json.dumps(d.result) for d in done],
                       [d.change.entity_id for d in done if d.change is not None])
            audit.carry_results(s, *results)
            if transitions:
                recording.record(s, self.recorders, *transitions)
            if audit.carried_results(s) is not None:  # no append took them
                fast.execute(statements.NATIVE_RECORD_RESULTS, *results)
            return
        if done:
            prepared.run(s.connection(), statements.RECORD_RESULT, [
                {"p_id": d.change.id, "p_result": d.result, "p_entity": d.change.entity_id}
                for d in done if d.change is not None])
        if transitions:
            recording.record(s, self.recorders, *transitions)

    # -- proposals ----------------------------------------------------------------------

    async def propose(
        self, principal: Principal, tool_name: str, arguments: dict[str, Any],
        expires_in_seconds: float | None = None, rationale: object = None,
    ) -> PendingChange:
        """Validate, build the diff and store a pending change; the workspace is untouched."""
        if principal.kind != "agent":
            raise Forbidden("only agents (API keys) propose changes")
        spec = OPERATIONS.get(tool_name)
        if spec is None:
            raise InvalidArguments(f"unknown tool {tool_name!r}; one of: {', '.join(OPERATIONS)}")
        args = _validated(spec, arguments)
        why = rationale_of(rationale)
        ttl = self.settings.pending_change_ttl_seconds
        if expires_in_seconds is not None:
            ttl = min(positive_seconds(expires_in_seconds), ttl)
        applied = args.model_dump(mode="json")
        tenant_id, actor = principal.tenant_id, Actor.of(principal)

        def plan(s: Session) -> Proposed:
            # Planned inside the transaction that stores it: one hop to the database for
            # the whole proposal, and the diff is of what the tenant has at that commit.
            try:
                planned = spec.plan(s, tenant_id, args)
            except InvalidArguments as exc:
                # Planners only read: nothing of this proposal is in the transaction, so
                # the others sharing it go on and only this caller gets the error.
                return Proposed(None, None, exc)
            now = utcnow()
            change = new_pending_change(
                tenant_id=tenant_id, api_key_id=principal.api_key_id,
                api_key_name=principal.key_name, tool_name=spec.name,
                operation=spec.operation, entity_type=spec.entity_type,
                entity_id=planned.entity_id, arguments=applied,
                proposed_arguments=dict(applied), rationale=why, diff=planned.diff,
                summary=planned.summary[:500], created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
            return Proposed(change, Transition(
                recording.PROPOSED, tenant_id, actor, change, {
                    "toolName": spec.name, "arguments": applied, "rationale": why,
                    "summary": change.summary, "entityId": change.entity_id,
                    "expiresAt": iso(change.expires_at)}))

        proposed = await self.proposals.run(tenant_id, plan)
        if proposed.error is not None:
            raise proposed.error
        change = proposed.change
        assert change is not None
        await self.announcer.announce(change)  # committed: reviewers' queues learn of it
        self._deadline_added(change.expires_at)
        return change

    def _deadline_added(self, at: datetime) -> None:
        """Wake the expiry loop only if this deadline comes before its planned wake-up
        (with the default TTL it never does: no extra work per proposal); during a pass,
        leave it to the pass to plan with."""
        if self._expiry_passing:
            soonest = self._soonest_during_pass
            if soonest is None or at < soonest:
                self._soonest_during_pass = at
            return
        planned = self.expiry_planned_at
        if planned is None or at < planned:
            self.deadline_changed.set()
            self.deadline_changed = anyio.Event()

    # -- decisions ----------------------------------------------------------------------

    async def approve(self, principal: Principal, change_id: object,
                      arguments: object = None) -> PendingChange:
        """Decide Approved and execute in the same transaction; announce after commit.

        With ``arguments`` (complete arguments for the change's tool) the reviewer's edit
        is validated and planned like a proposal first (InvalidArguments: the change stays
        Pending), then applied in place of the agent's, in the same winning statement.
        """
        if principal.kind != "reviewer":
            raise Forbidden("only reviewers approve changes")
        cid = parse_change_id(change_id)
        edit = None if arguments is None else await self._plan_edit(principal, cid, arguments)
        decision = _Decision(cid, Status.APPROVED, principal.display, None,
                             Actor.of(principal), edit=edit)
        change = (await self.decisions.run(principal.tenant_id, decision)).change
        if change is None:
            raise await self._lost(principal, cid)
        return await self._after_decision(change)

    async def _plan_edit(self, principal: Principal, cid: str, arguments: object
                         ) -> Edit | None:
        """The reviewer's arguments validated and planned (None: the same as proposed)."""
        async with self.db.read() as s:
            change = await s.get(PendingChange, cid)
        if change is None or change.tenant_id != principal.tenant_id:
            raise NotFound("pending change not found")
        if change.status != Status.PENDING.value:
            raise Conflict(change.status)
        spec = OPERATIONS[change.tool_name]
        args = _validated(spec, arguments, "arguments.")
        applied = args.model_dump(mode="json")
        if applied == change.proposed_arguments:
            return None  # nothing edited: approve what was proposed, with its diff
        async with self.db.read() as s:
            plan = await s.run_sync(
                lambda sync: spec.plan(cast(Session, sync), principal.tenant_id, args))
        return Edit(applied, plan)

    async def reject(self, principal: Principal, change_id: object, reason: object
                     ) -> PendingChange:
        """Decide Rejected with a reason."""
        if principal.kind != "reviewer":
            raise Forbidden("only reviewers reject changes")
        cid = parse_change_id(change_id)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArguments("reason is required")
        if len(reason) > MAX_REASON:
            raise InvalidArguments(f"reason must be at most {MAX_REASON} characters")
        change = await self._decide(
            principal.tenant_id, cid, Status.REJECTED, principal.display, reason.strip(),
            actor=Actor.of(principal))
        if change is None:
            raise await self._lost(principal, cid)
        return await self._after_decision(change)

    async def expire_due(self, limit: int = 500) -> list[PendingChange]:
        """Expire every overdue pending change (any tenant); each is announced once."""
        now = utcnow()
        async with self.db.read() as s:
            due = (await s.exec(
                select(PendingChange.id, PendingChange.tenant_id)
                .where(PendingChange.status == Status.PENDING.value)
                .where(col(PendingChange.expires_at) <= now)
                .order_by(col(PendingChange.expires_at)).limit(limit))).all()
        expired = []
        for cid, tenant_id in due:
            change = await self._decide(tenant_id, cid, Status.EXPIRED, None, None,
                                        only_overdue=True)
            if change is not None:
                expired.append(await self._after_decision(change))
        return expired

    async def expiry_pass(self, max_wait: float, limit: int = 500
                          ) -> tuple[float, anyio.Event]:
        """Expire what is due; then how long until the next pass, and the event that ends
        that wait early (a proposal whose deadline comes sooner)."""
        # Until the next wake-up is planned, every proposal's deadline is either read by
        # ``next_deadline`` (committed before it) or collected (``_deadline_added``): no gap.
        self.expiry_planned_at = None
        self._expiry_passing, self._soonest_during_pass = True, None
        wake = self.deadline_changed
        try:
            await self.expire_due(limit)
            deadline = await self.next_deadline()
        finally:
            self._expiry_passing = False  # a failed pass: proposals wake its restart
        soonest = self._soonest_during_pass
        if soonest is not None and (deadline is None or soonest < deadline):
            deadline = soonest
        wait = max_wait
        if deadline is not None:
            wait = min(max_wait, max(0.0, (deadline - utcnow()).total_seconds()) + 0.005)
        self.expiry_planned_at = utcnow() + timedelta(seconds=wait)
        return wait, wake

    async def next_deadline(self) -> datetime | None:
        """The earliest deadline of any pending change."""
        async with self.db.read() as s:
            return (await s.exec(
                select(func.min(PendingChange.expires_at))
                .where(PendingChange.status == Status.PENDING.value))).one()

    async def _decide(
        self, tenant_id: str, cid: str, status: Status, by: str | None, reason: str | None,
        only_overdue: bool = False, actor: Actor = EXPIRY,
    ) -> PendingChange | None:
        """Reject or expire (with the tenant's other concurrent decisions); the row if this
        call won, else None."""
        decision = _Decision(cid, status, by, reason, actor, only_overdue=only_overdue)
        return (await self.decisions.run(tenant_id, decision)).change

    async def _lost(self, principal: Principal, cid: str) -> NotFound | Conflict:
        """Why a decision did not apply: NotFound or Conflict (expiring the change if due)."""
        async with self.db.read() as s:
            change = await s.get(PendingChange, cid)
        if change is None or change.tenant_id != principal.tenant_id:
            return NotFound("pending change not found")
        if change.status == Status.PENDING.value:
            # Overdue but not yet swept: expire it now, so the answer is final.
            expired = await self._decide(change.tenant_id, cid, Status.EXPIRED, None, None,
                                         only_overdue=True)
            if expired is not None:
                await self._after_decision(expired)
                return Conflict(Status.EXPIRED.value)
            async with self.db.read() as s:
                change = await s.get(PendingChange, cid)
            assert change is not None
        return Conflict(change.status)

    async def _after_decision(self, change: PendingChange) -> PendingChange:
        pause = self.settings.pause_after_commit_seconds
        if pause > 0:  # test hook: a window to kill the process between commit and publish
            logger.warning("pausing %.1fs after committing %s (test hook)", pause, change.id)
            await anyio.sleep(pause)
        await self.announcer.announce(change)
        return change


def _validated(spec: Operation, arguments: object, where: str = "") -> Any:
    """The tool's argument model, or InvalidArguments naming each bad field."""
    if not isinstance(arguments, dict):
        raise InvalidArguments(f"{where.rstrip('.') or 'arguments'} must be an object")
    try:
        return spec.args.model_validate(arguments)
    except ValidationError as exc:
        # Fields named where the caller wrote them (``arguments.title`` in an edit).
        raise InvalidArguments(format_validation_error(exc, where)) from None


def _execute_all(s: Session, changes: list[PendingChange]) -> list[dict[str, Any]]:
    """Execute approved changes in order; their results. In a group's first try
    (``GROUPED``, one decision or several), a tool's consecutive changes go to its
    ``execute_many``, without savepoints."""
    if not s.info.get(GROUPED):
        return [_execute(s, ch) for ch in changes]
    entity_ids: list[str] = []
    start = 0
    while start < len(changes):
        spec = OPERATIONS[changes[start].tool_name]
        end = start + 1
        while end < len(changes) and changes[end].tool_name == spec.name:
            end += 1
        run = changes[start:end]
        if spec.execute_many is not None and len(run) > 1:
            entity_ids += spec.execute_many(s, run)
        else:
            entity_ids += [spec.execute(s, ch) for ch in run]
        start = end
    return [{"success": True, "entityId": e, "error": None} for e in entity_ids]


def _execute(s: Session, change: PendingChange) -> dict[str, Any]:
    """Apply the change inside a savepoint: all of it, or none of it and an error.

    In a group's first try there is no savepoint (two round trips on PostgreSQL; see
    ``_execute_all``): any failure raises instead, and store/groups.py runs each decision
    again alone, where this savepoint catches it.
    """
    spec = OPERATIONS[change.tool_name]
    try:
        with s.begin_nested():
            entity_id = spec.execute(s, change)
    except ExecutionError as exc:
        return {"success": False, "entityId": change.entity_id, "error": str(exc)}
    except Exception as exc:
        logger.exception("execution of %s failed", change.id)
        return {"success": False, "entityId": change.entity_id,
                "error": f"execution failed: {type(exc).__name__}"}
    return {"success": True, "entityId": entity_id, "error": None}
