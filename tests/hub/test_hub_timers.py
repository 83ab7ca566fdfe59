"""The hub's timer pass: every connection ticked once per round, in slices of bounded size."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from colaflow_mcp.config import Settings
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub.connection import HubConnection
from colaflow_mcp.hub.server import HubServer

pytestmark = pytest.mark.anyio


def hub_with(connections: int, **settings: Any) -> HubServer:
    hub = HubServer(Settings(hub_keep_alive_seconds=0.03, **settings), auth=None,  # type: ignore[arg-type]
                    notifier=None)  # type: ignore[arg-type]
    principal = Principal(kind="agent", tenant_id="t1", tenant_slug="t", api_key_id="k")
    for _ in range(connections):
        hub.registry.create(principal, 1)
    return hub


@pytest.mark.parametrize(("connections", "cap", "least", "slices"),
                         [(1_000, 100, 10, 10), (2_500, 100, 10, 25), (30, 100, 10, 10),
                          (1_001, 1_000, 1, 2)])
async def test_every_connection_is_ticked_once_a_round_in_slices_of_at_most_the_cap(
    connections: int, cap: int, least: int, slices: int,
) -> None:
    hub = hub_with(connections, hub_timer_slices=least, hub_timer_slice_connections=cap)
    everyone = {c.connection_id for c in hub.registry}
    ticked: list[list[HubConnection]] = []
    round_done = anyio.Event()

    def tick(conns: list[HubConnection], now: float) -> None:
        ticked.append(conns)
        if len(ticked) == slices:
            round_done.set()

    hub.tick = tick  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub.run_timers)
            await round_done.wait()
            tg.cancel_scope.cancel()
    first_round = ticked[:slices]
    assert max(len(s) for s in first_round) <= min(cap, -(-connections // least))
    ids = [c.connection_id for s in first_round for c in s]
    assert len(ids) == len(set(ids)) == connections and set(ids) == everyone


async def test_keep_alive_pings_still_reach_every_connection() -> None:
    """With the pass cut into many slices, each connected client still gets its ping."""
    hub = hub_with(250, hub_timer_slices=2, hub_timer_slice_connections=10)
    pinged: set[str] = set()
    all_pinged = anyio.Event()
    for conn in hub.registry:
        await conn.receive('{"protocol":"json","version":1}\x1e')
        conn.take()  # the handshake's answer

        def on_change(conn: HubConnection = conn) -> None:
            if any('"type":6' in f for f in conn.take()):
                pinged.add(conn.connection_id)
                if len(pinged) == 250:
                    all_pinged.set()

        conn.on_change = on_change
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub.run_timers)
            await all_pinged.wait()
            tg.cancel_scope.cancel()
    assert len(pinged) == 250
