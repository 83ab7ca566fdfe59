"""Group commit: concurrent transaction functions of one key share one transaction.

Decisions of one tenant take turns anyway (its audit chain's head row, its projects' issue
numbers are row locks held until commit), so each lock window, BEGIN and COMMIT (on
PostgreSQL a WAL flush, on SQLite a thread hop and the writer lock) is paid once per group
instead of once per decision. Nothing waits to form a group: a caller that finds its key
idle runs at once, alone; whoever arrives while a transaction of that key runs joins the
next one. Different keys (tenants) never wait for each other here.

A group's work is one call, ``body(session, key, items)``, so it can do set-wise what its
members share (claim them all with one statement, insert their rows with one). A body
that raises makes its group roll back; each member is then run again alone (a body of one
item), so one member's failure (or a deadlock between instances) only ever fails that
member. Members must therefore be safe to run again after a rollback.

A group may first be offered to ``first(key, items)`` (PostgreSQL: a whole group of
decisions in one statement, ``domain/decide_one.py``): its values, or None when it declines
(nothing written); then, or when it raises, the group runs as above.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
from sqlmodel import Session

from colaflow_mcp.store.engine import Database

logger = logging.getLogger(__name__)

# ``Session.info`` key, true in a group's first try (of one member or several): a member
# may then skip its savepoints and raise instead (any exception reruns every member alone,
# unmarked).
GROUPED = "colaflow.grouped"
I = TypeVar("I")  # noqa: E741 (a member's item)
T = TypeVar("T")

# ``body(session, key, items)``: every item's value, in order, in the caller's transaction.
Body = Callable[[Session, str, list[I]], list[T]]
# ``first(key, items)``: every item's value, committed, or None (declined, nothing written).
First = Callable[[str, list[I]], Awaitable[list[T] | None]]


@dataclass(eq=False)
class _Member(Generic[I]):
    key: str
    item: I
    done: anyio.Event = field(default_factory=anyio.Event)
    lead: bool = False
    value: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Lane:
    queue: list[_Member[Any]] = field(default_factory=list)
    busy: bool = False


class TransactionGroups(Generic[I, T]):
    """Runs items per key, the items of concurrent calls of a key in one transaction:
    ``body(session, key, items) -> values`` (one value per item, in order) does the work
    of a whole group; a group's first try has ``Session.info[GROUPED]`` set."""

    def __init__(self, db: Database, body: Body[I, T], max_size: int = 64,
                 first: First[I, T] | None = None) -> None:
        self.db = db
        self.body = body
        self.first = first
        self.firsts = 0  # groups ``first`` did (for tests and benchmarks)
        self.max_size = max(1, max_size)
        self._lanes: dict[str, _Lane] = {}
        self.transactions = 0  # committed groups (for tests and benchmarks)
        self.members = 0
        self.retried = 0  # groups that failed and were run member by member

    async def run(self, key: str, item: I) -> T:
        """``item``'s value once its transaction committed; the body's exception if it
        raised for this item run alone.

        Shielded from cancellation: once submitted, a member's transaction finishes (it
        may be another caller's) before the caller's cancellation takes effect.
        """
        with anyio.CancelScope(shield=True):
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            member: _Member[I] = _Member(key, item)
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
        if self.first is not None and await self._first(key, batch):
            return
        # A group of one too is tried marked first: its member skips its savepoints (two
        # round trips on PostgreSQL) and is run again unmarked only if it raises.
        try:
            values = await self.db.transact(lambda s: self._together(s, key, batch))
        except Exception as exc:  # each member is run again on its own below
            logger.info("a transaction of %d member(s) failed on its first try (%s: %s); "
                        "running each alone, with savepoints", len(batch),
                        type(exc).__name__, exc)
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

    async def _first(self, key: str, batch: list[_Member[Any]]) -> bool:
        assert self.first is not None
        try:
            values = await self.first(key, [m.item for m in batch])
        except Exception as exc:  # nothing known committed: the usual way decides
            logger.warning("a group of %d member(s) failed in one statement (%s: %s); "
                           "running it as a transaction", len(batch), type(exc).__name__,
                           exc)
            return False
        if values is None:
            return False
        for m, v in zip(batch, values, strict=True):
            m.value = v
        self.transactions += 1
        self.firsts += 1
        self.members += len(batch)
        return True

    def _together(self, s: Session, key: str, batch: list[_Member[Any]]) -> list[Any]:
        s.info[GROUPED] = True
        return self.body(s, key, [m.item for m in batch])

    def _alone(self, s: Session, member: _Member[Any]) -> Any:
        (value,) = self.body(s, member.key, [member.item])
        return value
