"""Coalesced reads (store/batching.py): what a reconnect storm's lookups share."""

from __future__ import annotations

import anyio
import pytest

from colaflow_mcp.store.batching import Coalescer

pytestmark = pytest.mark.anyio


class Table:
    """A stand-in table whose reads can be held open and made to fail."""

    def __init__(self) -> None:
        self.rows = {f"k{i}": i for i in range(100)}
        self.reads: list[list[str]] = []
        self.gate = anyio.Event()
        self.fail_next = False

    async def load(self, keys: list[str]) -> dict[str, int]:
        self.reads.append(keys)
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database went away")
        return {k: self.rows[k] for k in keys if k in self.rows}


async def test_a_lone_lookup_is_one_read_of_its_key() -> None:
    table = Table()
    table.gate.set()
    reads = Coalescer(table.load)
    assert await reads.get("k1") == 1
    assert await reads.get("missing") is None
    assert table.reads == [["k1"], ["missing"]]


async def test_lookups_waiting_during_a_read_share_the_next_one() -> None:
    table = Table()
    reads = Coalescer(table.load, batch=50)
    got: dict[str, int | None] = {}

    async def get(key: str) -> None:
        got[key] = await reads.get(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "k0")
        await anyio.wait_all_tasks_blocked()  # the first read is held by the gate
        assert len(table.reads) == 1
        for i in [*range(1, 81), 5, 5]:  # a burst, duplicates included
            tg.start_soon(get, f"k{i}")
        await anyio.wait_all_tasks_blocked()  # every lookup waits behind the read
        assert len(reads.waiting()) == 80
        table.gate.set()
    assert got == {f"k{i}": i for i in range(81)}
    # The first alone, then the 80 waiting keys in two reads of at most 50.
    assert [len(r) for r in table.reads] == [1, 50, 30]


async def test_a_failed_read_fails_its_caller_and_the_others_read_again() -> None:
    table = Table()
    reads = Coalescer(table.load)
    table.fail_next = True
    errors: list[BaseException] = []
    got: dict[str, int | None] = {}

    async def get(key: str) -> None:
        try:
            got[key] = await reads.get(key)
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "k1")
        await anyio.wait_all_tasks_blocked()  # the first read is held by the gate
        assert len(table.reads) == 1
        tg.start_soon(get, "k2")
        tg.start_soon(get, "k3")
        await anyio.wait_all_tasks_blocked()  # every lookup waits behind the read
        assert len(reads.waiting()) == 2
        table.gate.set()
    assert [str(e) for e in errors] == ["database went away"]
    assert got == {"k2": 2, "k3": 3}
    assert not reads.waiting()


async def test_a_cancelled_lookup_leaves_nothing_waiting() -> None:
    table = Table()
    reads = Coalescer(table.load)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reads.get, "k1")
        await anyio.wait_all_tasks_blocked()  # the first read is held by the gate
        assert len(table.reads) == 1
        with anyio.move_on_after(0.01):
            await reads.get("k2")  # waits behind the held read, then gives up
        assert not reads.waiting()
        table.gate.set()
    assert table.reads == [["k1"]]
