"""``changes watch``: the review queue, live, one line per change created or decided.

On start it prints what is already waiting. When the connection drops it reconnects with
backoff, subscribes again, and reports what happened meanwhile by comparing the fresh
queue with the one it knew: a change it did not know was created, a change that left the
queue was decided (read over REST for how). A change proposed and decided entirely while
it was away is not reported (``changes list`` shows it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import anyio

from colaflow_mcp.reviewer_cli.api import Api, CliError, Unreachable
from colaflow_mcp.reviewer_cli.hubclient import ConnectionLost, Timing, open_hub
from colaflow_mcp.reviewer_cli.output import (
    CREATED,
    DECISION_EVENTS,
    PENDING,
    emit,
    event_json,
    event_line,
)

FIRST_BACKOFF = 0.5
RECENT_DECISIONS = 1000  # decided ids remembered, so a repeated event prints once


@dataclass
class Watcher:
    """What ``watch`` has shown: the queue as it knows it, and the latest decisions."""

    api: Api
    as_json: bool
    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    decided: dict[str, None] = field(default_factory=dict)
    subscriptions: int = 0  # successful subscriptions so far

    def show(self, event: str, data: dict[str, Any], catch_up: bool = False) -> None:
        """Print one change's line (unless already shown) and remember it."""
        cid = str(data.get("pendingChangeId") or data.get("id"))
        if cid in self.decided:
            return
        if event in (CREATED, PENDING):
            if cid in self.known:
                return
            self.known[cid] = data
        else:
            self.known.pop(cid, None)
            self.decided[cid] = None
            if len(self.decided) > RECENT_DECISIONS:
                del self.decided[next(iter(self.decided))]
        emit(event_json(event, data, catch_up) if self.as_json
             else event_line(event, data, catch_up))

    async def caught_up(self, pending: list[dict[str, Any]], first: bool) -> None:
        """Take a fresh queue snapshot: on start, show it; after a reconnect, show what
        changed while away."""
        if first:
            for change in reversed(pending):  # oldest first, as they came
                self.show(PENDING, change)
            return
        fresh = {c["id"] for c in pending}
        for cid in [cid for cid in self.known if cid not in fresh]:
            change = await self.api.change(cid)
            event = DECISION_EVENTS.get(str(change.get("status")))
            if event is None:  # still pending, beyond the snapshot's window
                self.known.pop(cid, None)
            else:
                self.show(event, change, catch_up=True)
        for change in reversed(pending):
            self.show(CREATED, change, catch_up=True)

    async def follow(self, timing: Timing) -> None:
        """One connection: subscribe, catch up, print events until it ends."""
        async with open_hub(self.api.target, timing) as conn:
            result = await conn.invoke("SubscribeToReviewQueue")
            pending = result.get("pending") if isinstance(result, dict) else None
            if not isinstance(pending, list):
                raise CliError("unexpected answer to SubscribeToReviewQueue")
            if self.subscriptions:
                print("watch: reconnected", file=sys.stderr, flush=True)
            await self.caught_up(pending, first=not self.subscriptions)
            self.subscriptions += 1
            async for event, payload in conn.events():
                if event == CREATED or event in DECISION_EVENTS.values():
                    self.show(event, payload)


async def watch(api: Api, as_json: bool, timing: Timing, max_backoff: float) -> int:
    """Watch until interrupted; reconnect with backoff; CliError when it cannot go on."""
    watcher = Watcher(api, as_json)
    backoff = FIRST_BACKOFF
    while True:
        before = watcher.subscriptions
        try:
            await watcher.follow(timing)
        except (ConnectionLost, Unreachable) as exc:
            reason = str(exc)  # the hub, or the REST read after a reconnect: try again
        if watcher.subscriptions > before:
            backoff = FIRST_BACKOFF  # it was connected: the outage starts now
        print(f"watch: {reason}; reconnecting in {backoff:g} s", file=sys.stderr, flush=True)
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
