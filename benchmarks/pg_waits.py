"""Sample PostgreSQL's ``pg_stat_activity`` while a benchmark runs: what the server's
connections are doing (running, idle in transaction, waiting on a lock, on WAL, …).

``python -m benchmarks.pg_waits [--seconds 20] [--interval 0.005] [--like cola_bench_%]``:
start it, then start ``python -m benchmarks.approvals --engines postgres``; it waits for a
database whose name matches ``--like``, samples every connection to it (except its own)
and prints the share of samples per (state, wait event) and the number of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

PG = "postgresql://postgres@127.0.0.1:5432/postgres"

SQL = """
SELECT state, coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-'),
       left(query, 60)
FROM pg_stat_activity
WHERE datname LIKE $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


async def sample(seconds: float, interval: float, like: str) -> str:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    conn = await asyncpg.connect(PG)
    try:
        stmt = await conn.prepare(SQL)
        # Past set-up: wait for the decision path's statements, then for the warm-up to end.
        while not any("audit_head" in (r[2] or "") for r in await stmt.fetch(like)):  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.05)
        await asyncio.sleep(4)
        counts: collections.Counter[str] = collections.Counter()
        queries: collections.Counter[str] = collections.Counter()
        rounds = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = await stmt.fetch(like)
            rounds += 1
            for state, wait, query in rows:
                counts[f"{state:<20} {wait}"] += 1
                if state == "active" or wait.startswith("Lock"):
                    queries[f"{wait:<28} {query}"] += 1
            await asyncio.sleep(interval)
    finally:
        await conn.close()
    total = sum(counts.values())
    lines = [f"{rounds} samples, {total / max(1, rounds):.1f} connections on average", ""]
    lines += [f"{100 * c / total:5.1f}%  {k}" for k, c in counts.most_common()]
    lines += ["", "active or waiting on a lock, by statement:"]
    lines += [f"{100 * c / total:5.1f}%  {k}" for k, c in queries.most_common(15)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_waits", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--like", default="cola_bench_%")
    args = parser.parse_args()
    print(asyncio.run(sample(args.seconds, args.interval, args.like)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
