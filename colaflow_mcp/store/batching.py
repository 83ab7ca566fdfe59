"""Coalesced reads: concurrent lookups by key share one query.

One lookup at a time costs one query, as it would without this; a burst (a reconnect
storm: thousands of clients authenticating and re-subscribing at once) costs one query per
``batch`` keys instead of a database session each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
V = TypeVar("V")

Load = Callable[[list[K]], Awaitable[dict[K, V]]]


class _Wanted(Generic[K, V]):
    __slots__ = ("key", "done", "value")

    def __init__(self, key: K) -> None:
        self.key = key
        self.done = False
        self.value: V | None = None


class Coalescer(Generic[K, V]):
    """``get(key)``: the value ``load`` finds for it (None: none), read together with
    every other key waiting at that moment (up to ``batch``).

    Readers take turns on a FIFO lock; whoever holds it reads for all waiting keys, and a
    waiter whose value an earlier read already brought leaves at once. If a read fails,
    its caller gets the error and the others read for themselves in turn.
    """

    def __init__(self, load: Load[K, V], batch: int = 500) -> None:
        self.load = load
        self.batch = batch
        self._lock = anyio.Lock()
        self._waiting: dict[K, list[_Wanted[K, V]]] = {}
        self.reads = 0  # queries made (for tests and benchmarks)

    async def get(self, key: K) -> V | None:
        """The value for ``key``, or None."""
        wanted: _Wanted[K, V] = _Wanted(key)
        self._waiting.setdefault(key, []).append(wanted)
        try:
            async with self._lock:
                if not wanted.done:
                    await self._read(self._take(key))
        finally:
            if not wanted.done:  # cancelled or failed: nobody reads for it any more
                self._drop(wanted)
        return wanted.value

    def _take(self, first: K) -> dict[K, list[_Wanted[K, V]]]:
        taken = {first: self._waiting.pop(first)}
        while self._waiting and len(taken) < self.batch:
            key = next(iter(self._waiting))
            taken[key] = self._waiting.pop(key)
        return taken

    def _drop(self, wanted: _Wanted[K, V]) -> None:
        waiters = self._waiting.get(wanted.key)
        if waiters is not None and wanted in waiters:
            waiters.remove(wanted)
            if not waiters:
                del self._waiting[wanted.key]

    async def _read(self, taken: dict[K, list[_Wanted[K, V]]]) -> None:
        self.reads += 1
        try:
            found = await self.load(list(taken))
        except BaseException:
            self._requeue(taken)  # the others read for themselves when their turn comes
            raise
        for key, waiters in taken.items():
            value = found.get(key)
            for w in waiters:
                w.done, w.value = True, value

    def _requeue(self, taken: dict[K, list[_Wanted[K, V]]]) -> None:
        for key, waiters in taken.items():
            self._waiting.setdefault(key, []).extend(waiters)

    def waiting(self) -> Collection[K]:
        """Keys waiting for a read now."""
        return self._waiting.keys()
