"""``python -m benchmarks SCENARIO [--smoke] [--out DIR]``: run one scenario, save its JSON.

Scenarios: latency, throughput, mcp, push-vs-poll, peer, redis, memory, audit, mcp-memory,
storm (see README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.audit_cost import audit
from benchmarks.mcp_memory import mcp_memory
from benchmarks.scenarios import SCENARIOS as BASE_SCENARIOS
from benchmarks.server import raise_fd_limit
from benchmarks.storm import storm

HERE = Path(__file__).resolve().parent
SCENARIOS = {**BASE_SCENARIOS, "audit": audit, "mcp-memory": mcp_memory,
             "storm": storm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the tests)")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="where <scenario>.json goes (default benchmarks/results)")
    parser.add_argument("--sizes", help="comma-separated sizes (latency, mcp)")
    parser.add_argument("--rate", type=float, help="decisions per second")
    parser.add_argument("--rates", help="throughput: comma-separated rate ladder")
    parser.add_argument("--transports", help="latency: comma-separated hub-ws,hub-sse,hub-lp")
    parser.add_argument("--repeats", type=int,
                        help="peer, audit: rounds, alternating which runs first (default 3)")
    parser.add_argument("--servers", help="storm: comma-separated ours,sio (round 0's order)")
    parser.add_argument("--eras", help="mcp-memory: comma-separated legacy,modern")
    parser.add_argument("--client", choices=["sdk", "raw", "python", "node"],
                        help="mcp-memory: the official SDK client (default) or raw HTTP; "
                             "storm: Python worker processes (default) or Node.js "
                             "(tests/js/hub_storm.mjs)")
    parser.add_argument("--verify", type=int,
                        help="mcp-memory: approve this many watched changes, await each")
    parser.add_argument("--settle", type=float,
                        help="mcp-memory: seconds idle after the last client is ready before "
                             "RSS is read (default 2; legacy sessions park after 10)")
    parser.add_argument("--warm-mcp", type=int,
                        help="mcp-memory: K clients connect and go before the idle reading")
    parser.add_argument("--redis-url", help="redis: the Redis to use")
    parser.add_argument("--postgres-url", help="redis: PostgreSQL admin URL (creates a db)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    kwargs: dict[str, object] = {"smoke": args.smoke}
    if args.sizes:
        kwargs["sizes"] = [int(s) for s in args.sizes.split(",")]
    if args.rate:
        kwargs["rate"] = args.rate
    if args.rates:
        kwargs["rates"] = [float(r) for r in args.rates.split(",")]
    if args.transports:
        kwargs["transports"] = args.transports.split(",")
    if args.repeats:
        kwargs["repeats"] = args.repeats
    if args.servers:
        kwargs["servers"] = args.servers.split(",")
    if args.eras:
        kwargs["eras"] = args.eras.split(",")
    if args.client:
        kwargs["client"] = args.client
    if args.verify:
        kwargs["verify"] = args.verify
    if args.settle is not None:
        kwargs["settle"] = args.settle
    if args.warm_mcp:
        kwargs["warm_mcp"] = args.warm_mcp
    if args.redis_url:
        kwargs["redis_url"] = args.redis_url
    if args.postgres_url:
        kwargs["pg_admin_url"] = args.postgres_url
    t0 = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="colaflow-bench-") as tmp:
        result = asyncio.run(SCENARIOS[args.scenario](Path(tmp), **kwargs))  # type: ignore[operator]
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    # Other work on the machine skews every number: say how busy it was.
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before,
                         "loadavg_after": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.scenario + ("-smoke" if args.smoke else "")
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
