"""A group of approvals decided in one statement (PostgreSQL).

``domain/changes.py: ChangeService._decide_group`` decides a tenant's group in one
transaction of several round trips (BEGIN, the claim, the issues, the audit append,
COMMIT). For the common case, plain approvals of ``create_issue`` changes, the function
``colaflow_decide_group`` (revision 0006) does the same work inside the database, and
:class:`DecideOne` sends it as a statement of its own (``Database.run_alone``): one round
trip, committed by the server. The rows it leaves are those the Python path leaves: the
chain head locked first, each change claimed only if still Pending before its deadline,
the issues numbered in the group's order, the audit entries hashed as ``domain/audit.py``
hashes them, the results, ``announced_at`` left for the outbox
(tests/core/test_decide_one.py compares the two).

Whatever it cannot do exactly so it declines, and the group is decided in Python
(``store/groups.py: TransactionGroups``, ``first``): here, a group with a rejection, an
expiry or an edit, or a service with recorders besides the audit trail and the webhook
queue; in the database (SQLSTATE ``CF001``, nothing written), a tenant with webhook
endpoints, another tool, a missing project or chain head. If the connection is lost after
the server committed but before the answer arrived, the group is decided again in Python,
finds its changes decided and answers Conflict to their reviewers: the rows are right and
the announce sweep announces them (``delivery/recovery.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from colaflow_mcp.domain import audit
from colaflow_mcp.domain.recording import Actor, Recorder, Transition
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.domain.webhooks import WebhookRecorder
from colaflow_mcp.store import statements
from colaflow_mcp.store.engine import Database, Declined
from colaflow_mcp.store.tables import PendingChange, Status, new_pending_change, utcnow


@dataclass(frozen=True)
class Decided:
    """What a decision's transaction function did: the row if it won, and its transitions
    (recorded once per transaction, after every decision sharing it)."""

    change: PendingChange | None
    transitions: tuple[Transition, ...] = ()
    result: dict[str, Any] | None = None  # an approval's execution result


LOST = Decided(None)


class Decision(Protocol):
    """What this path reads of a decision (``domain/changes.py: _Decision``)."""

    @property
    def cid(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def by(self) -> str | None: ...
    @property
    def actor(self) -> Actor: ...
    @property
    def only_overdue(self) -> bool: ...
    @property
    def edit(self) -> object | None: ...


def fits(db: Database, recorders: Sequence[Recorder]) -> bool:
    """Whether a service's decisions may take this path: PostgreSQL, and recorders that
    write what the function writes (the audit trail) or that it checks for (webhooks)."""
    return not db.is_sqlite and all(
        r is audit.record or isinstance(r, WebhookRecorder) for r in recorders)


def _millis(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class DecideOne:
    """``first`` of the decisions' ``TransactionGroups``: a group of plain approvals in one
    statement; None (declined, nothing written) for anything else."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, tenant_id: str, items: Sequence[Decision]) -> list[Decided] | None:
        if any(d.status != Status.APPROVED or d.edit is not None or d.only_overdue
               for d in items):
            return None
        now = utcnow()
        at = _millis(now)
        try:
            rows = await self.db.run_alone(
                statements.NATIVE_DECIDE_GROUP, tenant_id, now, at, iso(at),
                [d.cid for d in items], [d.by for d in items],
                [d.actor.type for d in items], [d.actor.id for d in items],
                [d.actor.name for d in items])
        except Declined:
            return None
        won = {row["id"]: new_pending_change(**dict(row.items())) for row in rows}
        out: list[Decided] = []
        for d in items:
            # A change twice in the group: the first approval wins, the second loses.
            change = won.pop(d.cid, None)
            out.append(LOST if change is None else
                       Decided(change, (), change.execution_result))
        return out


__all__ = ["LOST", "DecideOne", "Decided", "Decision", "fits"]
