import asyncio, sys, uuid, datetime as dt
import asyncpg
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store import statements as S

N = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
ANALYZE = len(sys.argv) > 2 and sys.argv[2] == "analyze"
KEEP = "keep" in sys.argv

async def main():
    name = f"cola_explain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = Database(f"postgresql://postgres@127.0.0.1:5432/{name}")
        await db.create_schema()
        await db.dispose()
        c = await asyncpg.connect(host="127.0.0.1", user="postgres", database=name)
        now = dt.datetime.utcnow()
        await c.execute("INSERT INTO tenant (id, slug, name, created_at) VALUES ('t1','t1','t1',$1)", now)
        await c.execute("INSERT INTO audit_head (tenant_id, seq, hash) VALUES ('t1', 0, '')")
        await c.execute("""INSERT INTO pending_change (id, tenant_id, tool_name, operation, entity_type,
            arguments, proposed_arguments, edited, diff, summary, status, created_at, expires_at)
            SELECT 'c' || g, 't1', 'create_issue', 'create', 'issue', '{}', '{}', false, '{}', '', 'Pending',
            $1, $2 FROM generate_series(1, $3) g""", now, now + dt.timedelta(hours=1), N)
        if ANALYZE:
            await c.execute("ANALYZE")
        ids = [f"c{i}" for i in (5, 77, 1500, 2222)]
        k = len(ids)
        claim = S.NATIVE_LOCK_HEAD_CLAIM_MANY
        args = ["t1", now, ids, ["Approved"]*k, ["r"]*k, [None]*k, [False]*k]
        res = S.NATIVE_APPEND_AUDIT_RECORD_RESULTS
        rargs = ["t1", 1, "h", now, [1]*0, [], [], [], [], [], [], [], [], ids, ["{}"]*k, ["e"]*k]
        mark = S.MARK_ANNOUNCED if hasattr(S, "MARK_ANNOUNCED") else None
        mark = ("UPDATE pending_change SET announced_at=$1::TIMESTAMP WITH TIME ZONE WHERE pending_change.id IN ($2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR) AND pending_change.announced_at IS NULL")
        await c.execute("UPDATE pending_change SET status='Approved', decided_at=$1 WHERE id = ANY($2)", now, ids)
        for label, sql, a in (("claim", claim, args), ("results+audit", res, rargs), ("mark", mark, [now, *ids])):
            async with c.transaction():
                for r in await c.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *a):
                    print(label, "|", r[0])
                raise_ = None
            print()
        await c.close()
    finally:
        print("DB", name) if KEEP else await admin.execute(f"DROP DATABASE \"{name}\" WITH (FORCE)")
        await admin.close()
asyncio.run(main())
