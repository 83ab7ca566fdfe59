"""The catch-up read of a subscribe (delivery/notifier.py): bounded, and not cut short by
the caller going away; and the change ids it is given (domain/ids.py)."""

from __future__ import annotations

from typing import cast

import anyio
import pytest

from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import PendingChange

pytestmark = pytest.mark.anyio

CHANGE = "0b7f3c1e-5d2a-4f6b-9c8d-1e2f3a4b5c6d"


class Waiter:
    tenant_id = "t1"

    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []

    def deliver(self, event: DecisionEvent) -> None:
        self.events.append(event)


class HeldReads(Notifier):
    """A notifier whose catch-up read waits for ``gate`` and finds nothing."""

    def __init__(self, db_call_seconds: float) -> None:
        super().__init__(cast(Database, None), db_call_seconds)
        self.gate = anyio.Event()
        self.finished = 0

    async def _read_changes(self, change_ids: list[str]) -> dict[str, PendingChange]:
        await self.gate.wait()
        self.finished += 1
        return {}


async def test_a_read_that_outlasts_its_bound_fails_and_leaves_nothing_registered() -> None:
    notifier = HeldReads(db_call_seconds=0.05)
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await notifier.subscribe(Waiter(), CHANGE)
    assert notifier.subscriber_count() == 0
    assert notifier.finished == 0


async def test_a_caller_that_goes_away_does_not_cut_the_read_short() -> None:
    notifier = HeldReads(db_call_seconds=5)

    async def subscribe() -> None:
        await notifier.subscribe(Waiter(), CHANGE)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            await anyio.wait_all_tasks_blocked()
            assert notifier.subscriber_count() == 1  # registered before the read
            tg.cancel_scope.cancel()
            notifier.gate.set()
    # The read ran to its end (shielded); the missing change left nothing registered.
    assert notifier.finished == 1
    assert notifier.subscriber_count() == 0


@pytest.mark.parametrize("spelling", [
    CHANGE, CHANGE.upper(), "{" + CHANGE + "}", CHANGE.replace("-", ""), f"  {CHANGE} ",
    "urn:uuid:" + CHANGE,
])
def test_every_spelling_of_a_uuid_is_the_canonical_id(spelling: str) -> None:
    assert parse_change_id(spelling) == CHANGE


@pytest.mark.parametrize("value", ["", "not-a-uuid", CHANGE + "0", CHANGE[:-1] + "g",
                                   "x" * 100, 42, None])
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(InvalidArguments):
        parse_change_id(value)
