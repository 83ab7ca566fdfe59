"""Profile the server under a benchmark load with py-spy; print where the time goes.

``python -m benchmarks.profile [decide|hub|poll] [--seconds S] [--out DIR]``:
- ``decide``: REST decisions at full speed, nobody subscribed (the decision path);
- ``hub``: 1,000 hub WebSocket subscribers and decisions at 150/s;
- ``hub10k``: 10,000 hub WebSocket subscribers and decisions at 50/s;
- ``poll``: 1,000 agents polling REST every second;
- ``tick``: no server: time the hub's timer pass over 10,000 idle connections in-process.
Writes ``profile-<load>.txt`` (collapsed stacks) and prints the top functions by own
and by total time. Needs ``py-spy`` (the ``bench`` extra) and ptrace rights (root).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.loadgen import decide, run_load
from benchmarks.scenarios import warm_up
from benchmarks.server import raise_fd_limit, running_server, seed_changes

HERE = Path(__file__).resolve().parent


def top(collapsed: Path, n: int = 25) -> str:
    """Own-time and total-time tables from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "own time:"]
    lines += [f"{100 * c / samples:6.1f}%  {f}" for f, c in own.most_common(n)]
    lines += ["", "total time (inclusive):"]
    lines += [f"{100 * c / samples:6.1f}%  {f}" for f, c in total.most_common(n * 2)]
    return "\n".join(lines)


async def profile(load: str, seconds: float, out: Path, root: Path) -> None:
    with running_server(root / "profile") as server:
        await warm_up(server, 200)
        rate = {"decide": 10_000.0, "hub": 150.0, "hub10k": 50.0, "poll": 1.0}[load]
        count = int(seconds * (400 if load == "decide" else rate))
        ids = await seed_changes(server, max(count, 10_000 if load == "hub10k" else 1000))
        target = out / f"profile-{load}.txt"
        spies: list[asyncio.subprocess.Process] = []

        async def start_spy() -> None:
            spies.append(await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                str(server.pid), "--format", "raw", "--rate", "200", "--duration",
                str(int(seconds)), "--output", str(target), "--gil",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        if load == "decide":
            await start_spy()
            await decide(server.port, server.creds.reviewer_token, ids[:count], rate, 16)
        elif load in ("hub", "hub10k"):
            agents = 10_000 if load == "hub10k" else 1000
            await run_load(server, kind="hub-ws", change_ids=ids[:max(agents, count)],
                           agents=agents, rate=rate, per_agent=max(1, count // agents),
                           decide_ids=ids[:count], on_ready=start_spy,
                           workers=2 if agents > 1000 else 1)
        else:
            await run_load(server, kind="poll", change_ids=ids[:1000], agents=1000,
                           rate=1000 / seconds, options={"poll_interval": 1.0},
                           on_ready=start_spy)
        async with asyncio.timeout(seconds + 60):
            await spies[0].wait()
    print(top(target))


def tick_cost(connections: int = 10_000) -> str:
    """Time the hub's once-a-second timer pass over ``connections`` idle connections."""
    import time

    from colaflow_mcp.domain.auth import Principal
    from colaflow_mcp.hub.connection import ConnectionState, HubConnection
    from colaflow_mcp.hub.outbound import Limits

    class NoHub:
        async def invoke(self, conn: HubConnection, target: str, arguments: list[object]
                         ) -> object:
            return None

        def closed(self, conn: HubConnection) -> None:
            pass

    principal = Principal(kind="agent", tenant_id="t", tenant_slug="t", api_key_id="k")
    conns: dict[str, HubConnection] = {}  # as HubServer.connections
    for i in range(connections):
        conn = HubConnection(connection_id=str(i), token=str(i), principal=principal,
                             hub=NoHub(), limits=Limits(32768, 1024))
        conn.attach_socket()
        conn.state = ConnectionState.CONNECTED  # as after a handshake
        conns[conn.token] = conn
    now = time.monotonic()
    lines = []
    for label, at in (("nothing due", now), ("every keep-alive ping due", now + 16)):
        t0 = time.perf_counter()
        for conn in list(conns.values()):  # the copy HubServer.tick makes
            conn.tick(at, keep_alive=15, client_timeout=1e9, handshake_timeout=15,
                      disconnect_timeout=15)
        lines.append(f"{label}: {(time.perf_counter() - t0) * 1000:.1f} ms for "
                     f"{connections:,} connections")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("load", choices=["decide", "hub", "hub10k", "poll", "tick"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.load == "tick":
        print(tick_cost())
        return 0
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="colaflow-profile-") as tmp:
        asyncio.run(profile(args.load, args.seconds, args.out, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
