"""One decision group's statements on one asyncpg connection, nothing else (pg-onetrip).

``python stmt_timing.py CHECKOUT``: 400 groups of 4 approvals, each BEGIN, the claim, then
main's create-issues and audit-append statements (2 round trips) or, in the pg-onetrip
branch, the one statement that does both; COMMIT. Prints ms per group. The claim matches
no row (the ids are new): it measures the statement, not a decision.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import asyncpg  # type: ignore[import-untyped,unused-ignore]

sys.path.insert(0, sys.argv[1])
from colaflow_mcp.store import statements as st  # noqa: E402
from colaflow_mcp.store.engine import Database  # noqa: E402
from colaflow_mcp.store.tables import utcnow  # noqa: E402

URL = "postgresql://127.0.0.1:5432/test"
GROUPS, SIZE = 400, 4


async def main() -> None:
    name = f"stmt_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql://127.0.0.1:5432/{name}"
    await Database(url).create_schema()
    c = await asyncpg.connect(url)
    await c.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    tid = str(uuid.uuid4())
    await c.execute("INSERT INTO tenant (id, slug, name, created_at) "
                    "VALUES ($1, 'x', 'x', now())", tid)
    await c.execute("INSERT INTO project (id, tenant_id, key, name, description, "
                    "next_issue_number, created_at, updated_at) "
                    "VALUES ($1, $2, 'WEB', 'w', '', 1, now(), now())", str(uuid.uuid4()), tid)
    await c.execute("INSERT INTO audit_head (tenant_id, seq, hash) VALUES ($1, 0, $2)",
                    tid, "0" * 64)
    combined = hasattr(st, "NATIVE_CREATE_ISSUES_APPEND_AUDIT_RECORD_RESULTS")
    k, seq = SIZE, 0
    t0 = time.perf_counter()
    for _ in range(GROUPS):
        now, ids = utcnow(), [str(uuid.uuid4()) for _ in range(k)]
        fields = [[f"t{i}" for i in range(k)], [""] * k, ["Task"] * k, ["ToDo"] * k,
                  ["Medium"] * k, [None] * k]
        audit = [tid, seq + 2 * k, "h", now, list(range(seq + 1, seq + 2 * k + 1)),
                 *([v] * 2 * k for v in ("reviewer", "r", "r", "change.approved")),
                 [None] * 2 * k, ['{"a":1}'] * 2 * k, ["p"] * 2 * k, ["h"] * 2 * k]
        results = [ids, ['{"success":true}'] * k, ids]
        async with c.transaction():
            await c.fetch(st.NATIVE_LOCK_HEAD_CLAIM_MANY, tid, now, ids, ["Approved"] * k,
                          ["r"] * k, [None] * k, [False] * k)
            if combined:
                await c.fetch(st.NATIVE_CREATE_ISSUES_APPEND_AUDIT_RECORD_RESULTS, *audit,
                              *results, now, ["WEB"] * k, ids, *fields)
            else:
                await c.fetch(st.NATIVE_CREATE_ISSUES, tid, "WEB", k, now, ids, *fields)
                await c.execute(st.NATIVE_APPEND_AUDIT_RECORD_RESULTS, *audit, *results)
        seq += 2 * k
    elapsed = time.perf_counter() - t0
    await c.close()
    admin = await asyncpg.connect(URL)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()
    print(f"{sys.argv[1]}: {GROUPS} groups of {k}: {elapsed / GROUPS * 1000:.3f} ms per group")


asyncio.run(main())
