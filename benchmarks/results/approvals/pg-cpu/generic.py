import asyncio, sys, uuid, datetime as dt
import asyncpg
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store import statements as S
from sqlalchemy.dialects import postgresql

N = int(sys.argv[1])
MODE = sys.argv[2]  # force_generic_plan / force_custom_plan

async def main():
    name = f"cola_explain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = Database(f"postgresql://postgres@127.0.0.1:5432/{name}")
        await db.create_schema(); await db.dispose()
        c = await asyncpg.connect(host="127.0.0.1", user="postgres", database=name)
        now = dt.datetime.utcnow()
        await c.execute("INSERT INTO tenant (id, slug, name, created_at) VALUES ('t1','t1','t1',$1)", now)
        await c.execute("INSERT INTO audit_head (tenant_id, seq, hash) VALUES ('t1', 0, '')")
        await c.execute("""INSERT INTO pending_change (id, tenant_id, tool_name, operation, entity_type,
            arguments, proposed_arguments, edited, diff, summary, status, created_at, expires_at)
            SELECT 'c' || g, 't1', 'create_issue', 'create', 'issue', '{}', '{}', false, '{"a": "x"}', repeat('s', 80), 'Pending',
            $1, $2 FROM generate_series(1, $3) g""", now, now + dt.timedelta(hours=1), N)
        await c.execute(f"SET plan_cache_mode = {MODE}")
        ids = "'{c5,c77,c1500,c2222}'"
        claim = (f"PREPARE claim(text, timestamptz, text[], text[], text[], text[], boolean[]) AS {S.NATIVE_LOCK_HEAD_CLAIM_MANY}",
                 f"EXECUTE claim('t1', now(), {ids}, '{{Approved,Approved,Approved,Approved}}', '{{r,r,r,r}}', '{{NULL,NULL,NULL,NULL}}', '{{f,f,f,f}}')")
        res = (f"PREPARE res(text[], text[], text[]) AS {S.NATIVE_RECORD_RESULTS}",
               f"EXECUTE res({ids}, '{{\"{{}}\",\"{{}}\",\"{{}}\",\"{{}}\"}}', '{{e,e,e,e}}')")
        cond = "CASE WHEN (pending_change.announced_at IS NULL) THEN true ELSE false END" if "case" in sys.argv else "pending_change.announced_at IS NULL"
        m = "UPDATE pending_change SET announced_at=$1::TIMESTAMP WITH TIME ZONE WHERE pending_change.id IN ($2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR) AND " + cond
        mark = (f"PREPARE mark(timestamptz, text, text, text, text) AS {m}", "EXECUTE mark(now(), 'c5', 'c77', 'c1500', 'c2222')")
        for label, (prep, ex) in (("claim", claim), ("results", res), ("mark", mark)):
            await c.execute(prep)
            async with c.transaction():
                for r in await c.fetch("EXPLAIN (ANALYZE, COSTS ON) " + ex):
                    if any(w in r[0] for w in ("Scan", "Execution", "Loop", "Join")) and "CTE Scan" not in r[0]:
                        print(label, "|", r[0])
                await c.execute("SELECT 1")
        await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
asyncio.run(main())
