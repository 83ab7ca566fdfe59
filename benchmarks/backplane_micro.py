"""The Redis backplane's CPU per decision, two instances in two processes (no HTTP, no
database): what publishing and receiving cost an instance.

``python -m benchmarks.backplane_micro [--redis-url URL] [--events 20000] [--batch 1]
[--repeats 3] [--b-wants all|none]``: process A (the deciding instance) announces
``--events`` approved decisions through its :class:`Outbox` in rounds of ``--batch`` (the
next round once the marker has the last one, so a publisher batch holds at most
``--batch`` events) and
listens on the backplane as every instance does; process B (another instance) only
listens. Both on uvloop, as ``serve``. Prints, per process, CPU per decision
(``time.process_time``; Redis's own CPU is not in it) and the decisions/s of the run.
A's figure is what one instance with Redis pays on top of the in-process backplane
(publish, and its own events coming back); B's what every other instance pays per
decision made elsewhere. ``--b-wants none``: B has no subscriber for any of these
changes (as an instance whose clients watch other changes); a version whose listener asks
the notifier first (``wants``) then drops them unparsed, an older one parses and
dispatches each to nobody. B counts an event as seen either way.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio

from colaflow_mcp.delivery.backplane import RedisBackplane
from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.store.tables import PendingChange, Status


class _Marks:
    """Stands in for the database: counts what the marker records."""

    def __init__(self) -> None:
        self.marked = 0
        self.changed = anyio.Event()

    async def transact(self, fn: Any) -> None:
        fn(self)  # the marker's one statement, on this stand-in for a session

    def connection(self) -> _Marks:
        return self

    def execute(self, _statement: Any, params: dict[str, Any]) -> None:
        self.marked += len(params["p_ids"])
        self.changed.set()
        self.changed = anyio.Event()


def _change(i: int, tenant: str) -> PendingChange:
    now = datetime.now(UTC)
    cid = f"{uuid.uuid4()}"
    return PendingChange(
        id=cid, tenant_id=tenant, tool_name="create_issue", operation="create",
        entity_type="issue", entity_id=None, arguments={"project_key": "WEB", "title": f"t{i}"},
        status=Status.APPROVED.value, decided_by="rita", decided_at=now, created_at=now,
        execution_result={"success": True, "entityId": f"WEB-{i}", "error": None},
        edited=False, api_key_id="k", expires_at=now)


async def _listen(bus: RedisBackplane, on_event: Any, ready: anyio.Event,
                  wants: Any = None) -> None:
    async def reconnected(_: datetime | None) -> None:
        ready.set()
    if wants is not None and "wants" in inspect.signature(bus.run).parameters:
        await bus.run(on_event, reconnected, wants)
    else:  # a version without interest checks: every event is parsed and dispatched
        await bus.run(on_event, reconnected)


async def _instance_a(url: str, channel: str, events: int, batch: int,
                      go: Any, out: Any) -> None:
    marks = _Marks()
    db: Any = marks
    notifier = Notifier(db)
    bus = RedisBackplane(url, channel=channel)
    outbox = Outbox(db, notifier, bus, marker_linger_seconds=0.0)
    tenant = "t-micro"
    changes = [_change(i, tenant) for i in range(events)]
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(_listen, bus, notifier.dispatch, ready)
        tg.start_soon(outbox.run_publisher)
        tg.start_soon(outbox.run_marker)
        await ready.wait()
        await anyio.to_thread.run_sync(go.wait)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for start in range(0, events, batch):
            for change in changes[start:start + batch]:
                await outbox.announce(change)
            target = min(events, start + batch)
            with anyio.fail_after(30):
                while marks.marked < target:
                    await marks.changed.wait()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        outbox.close()
        tg.cancel_scope.cancel()
    await bus.aclose()
    out.put({"process": "A", "cpu_us_per_event": round(cpu * 1e6 / events, 1),
             "per_s": round(events / wall)})


async def _instance_b(url: str, channel: str, events: int, ready_flag: Any,
                      out: Any, b_wants: str = "all") -> None:
    bus = RedisBackplane(url, channel=channel)
    notifier = Notifier(_Marks())  # type: ignore[arg-type]
    got = 0
    done = anyio.Event()

    def seen() -> None:
        nonlocal got
        got += 1
        if got == events:
            done.set()

    def on_event(event: DecisionEvent) -> None:
        notifier.dispatch(event)
        seen()

    def wants(change_id: str, tenant_id: str) -> bool:
        if b_wants == "all":
            return True
        seen()  # declined: dropped unparsed
        return notifier.wants(change_id, tenant_id)

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(_listen, bus, on_event, ready, wants)
        await ready.wait()
        cpu0 = time.process_time()
        ready_flag.set()
        with anyio.fail_after(120):
            await done.wait()
        cpu = time.process_time() - cpu0
        tg.cancel_scope.cancel()
    await bus.aclose()
    out.put({"process": "B", "cpu_us_per_event": round(cpu * 1e6 / events, 1)})


def _run(role: str, *args: Any) -> None:
    import uvloop

    fn = _instance_a if role == "A" else _instance_b
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(fn(*args))


def once(url: str, events: int, batch: int, b_wants: str = "all") -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    b_ready = ctx.Event()
    channel = f"colaflow:micro:{uuid.uuid4().hex[:8]}"
    b = ctx.Process(target=_run, args=("B", url, channel, events, b_ready, out, b_wants))
    a = ctx.Process(target=_run, args=("A", url, channel, events, batch, b_ready, out))
    b.start()
    a.start()
    results = {}
    for _ in range(2):
        r = out.get(timeout=180)
        results[r.pop("process")] = r
    a.join(10)
    b.join(10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backplane_micro",
                                     description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--b-wants", choices=("all", "none"), default="all",
                        help="whether B has subscribers for the changes (default all)")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        r = once(args.redis_url, args.events, args.batch, args.b_wants)
        r["loadavg"] = os.getloadavg()[0]
        runs.append(r)
        print(json.dumps(r), flush=True)
    summary = {
        "events": args.events, "batch": args.batch, "b_wants": args.b_wants,
        "A_cpu_us_median": statistics.median(r["A"]["cpu_us_per_event"] for r in runs),
        "B_cpu_us_median": statistics.median(r["B"]["cpu_us_per_event"] for r in runs),
        "A_per_s_median": statistics.median(r["A"]["per_s"] for r in runs),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
