"""Group commit: concurrent transaction functions of one key share one transaction.

Decisions of one tenant take turns anyway (its audit chain's head row, its projects' issue
numbers are row locks held until commit), so each lock window, BEGIN and COMMIT (on
PostgreSQL a WAL flush, on SQLite a thread hop and the writer lock) is paid once per group
instead of once per decision. Nothing waits to form a group: a caller that finds its key
idle runs at once, alone; whoever arrives while a transaction of that key runs joins the
next one. Different keys (tenants) never wait for each other here.

A member that raises makes its group roll back; each member is then run again in a
transaction of its own, so one member's failure (or a deadlock between instances) only
ever fails that member. Members must therefore be safe to run again after a rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
from sqlmodel import Session

from colaflow_mcp.store.engine import Database

logger = logging.getLogger(__name__)

# ``Session.info`` key, true in a transaction of several members: a member may then skip
# its savepoints and raise instead (any exception reruns every member alone, unmarked).
GROUPED = "colaflow.grouped"
T = TypeVar("T")


@dataclass(eq=False)
class _Member(Generic[T]):
    key: str
    fn: Callable[[Session], T]
    done: anyio.Event = field(default_factory=anyio.Event)
    lead: bool = False
    value: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Lane:
    queue: list[_Member[Any]] = field(default_factory=list)
    busy: bool = False


class TransactionGroups(Generic[T]):
    """Runs ``fn(session) -> T`` per key, concurrent calls of a key in one transaction.

    ``finish(session, values)`` runs last in every transaction with the values of its
    members, in order (the place for work done once per transaction, such as audit
    entries); ``start(session, key)`` runs first in every transaction (for example, to
    take a lock that orders the row locks its members take, across instances).
    """

    def __init__(self, db: Database, finish: Callable[[Session, list[T]], None],
                 start: Callable[[Session, str], None] | None = None,
                 max_size: int = 64) -> None:
        self.db = db
        self.finish = finish
        self.start = start
        self.max_size = max(1, max_size)
        self._lanes: dict[str, _Lane] = {}
        self.transactions = 0  # committed groups (for tests and benchmarks)
        self.members = 0
        self.retried = 0  # groups that failed and were run member by member

    async def run(self, key: str, fn: Callable[[Session], T]) -> T:
        """``fn``'s value once its transaction committed; its exception if it raised.

        Shielded from cancellation: once submitted, a member's transaction finishes (it
        may be another caller's) before the caller's cancellation takes effect.
        """
        with anyio.CancelScope(shield=True):
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            member: _Member[T] = _Member(key, fn)
            lane.queue.append(member)
            if not lane.busy:
                lane.busy = True
                await self._lead(key, lane)
            else:
                await member.done.wait()  # a result, or the turn to lead the next group
                if member.lead:
                    await self._lead(key, lane)
        if member.error is not None:
            raise member.error
        return member.value  # type: ignore[no-any-return]

    async def _lead(self, key: str, lane: _Lane) -> None:
        batch = lane.queue[:self.max_size]
        del lane.queue[:self.max_size]
        try:
            await self._run(key, batch)
        finally:
            if lane.queue:
                nxt = lane.queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                lane.busy = False
                if self._lanes.get(key) is lane:
                    del self._lanes[key]
            for m in batch:
                m.lead = False
                m.done.set()

    async def _run(self, key: str, batch: list[_Member[Any]]) -> None:
        if len(batch) > 1:
            try:
                values = await self.db.transact(lambda s: self._together(s, key, batch))
            except Exception as exc:  # each member is run again on its own below
                logger.info("a group of %d transactions failed (%s: %s); running each "
                            "alone", len(batch), type(exc).__name__, exc)
                self.retried += 1
            else:
                for m, v in zip(batch, values, strict=True):
                    m.value = v
                self.transactions += 1
                self.members += len(batch)
                return
        for m in batch:
            try:
                m.value = await self.db.transact(partial(self._alone, member=m))
                self.transactions += 1
                self.members += 1
            except Exception as exc:
                m.error = exc

    def _together(self, s: Session, key: str, batch: list[_Member[Any]]) -> list[Any]:
        s.info[GROUPED] = True
        if self.start is not None:
            self.start(s, key)
        values = [m.fn(s) for m in batch]
        self.finish(s, values)
        return values

    def _alone(self, s: Session, member: _Member[Any]) -> Any:
        if self.start is not None:
            self.start(s, member.key)
        value = member.fn(s)
        self.finish(s, [value])
        return value
