"""A group of approvals in one statement (PostgreSQL only; nothing on SQLite): the function
``colaflow_decide_group`` does in one call what ``domain/changes.py: _decide_group`` does
for a group of plain approvals of ``create_issue`` changes of one tenant, with the same
rows as the result (see ``domain/decide_one.py``).

It takes the tenant's audit chain head ``FOR UPDATE`` first (the lock order of every
decision transaction), claims each change still Pending before its deadline (``FOR
UPDATE``; a change another transaction decided is skipped, exactly one wins), creates the
issues per project (numbers taken in the group's order), appends ``change.approved`` and
``change.executed`` per change to the chain with the hashes ``domain/audit.py`` computes
(``sha256(prevHash + canonical JSON)``, the canonical text built here exactly as Python's
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes it), moves
the head, and writes each change's status and execution result; it returns the decided
rows. Where it cannot do exactly what Python does it raises SQLSTATE ``CF001`` (nothing is
written) and the caller decides the group in Python: a tenant with live webhook endpoints,
a tool other than ``create_issue``, an edited change, a project that no longer exists, a
tenant without a chain head.

Revision ID: 0006_decide_group_function
Revises: 0005_webhooks
"""

from __future__ import annotations

from alembic import op

revision: str = "0006_decide_group_function"
down_revision: str | None = "0005_webhooks"
branch_labels: str | None = None
depends_on: str | None = None

# $1 tenant, $2 now (decided_at, the issues' created_at), $3 the audit entries' ``at``
# (whole milliseconds), $4 that ``at`` as the hash has it (``iso``); per decision, in the
# group's order: $5 change ids, $6 deciders, $7 actor types, $8 actor ids, $9 actor names.
# The conditions on ``pending_change`` other than its id sit inside a CASE (see
# store/statements.py: _CLAIMABLE): its rows are reached by primary key only.
FUNCTION = r"""
CREATE OR REPLACE FUNCTION colaflow_decide_group(
    p_tenant text, p_now timestamptz, p_at timestamptz, p_at_iso text, p_ids text[],
    p_by text[], p_actor_type text[], p_actor_id text[], p_actor_name text[])
RETURNS SETOF pending_change
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
DECLARE
    v_seq bigint;
    v_hash text;
    r record;
    v_item int[] := '{}';
    v_id text[] := '{}';
    v_after json[] := '{}';
    v_project text[] := '{}';
    v_entity text[];
    v_result text[] := '{}';
    v_n int;
    v_key text;
    v_count int;
    v_pid text;
    v_pkey text;
    v_first int;
    v_seqs bigint[] := '{}';
    v_actions text[] := '{}';
    v_data text[] := '{}';
    v_prevs text[] := '{}';
    v_hashes text[] := '{}';
    v_changes text[] := '{}';
    v_types text[] := '{}';
    v_aids text[] := '{}';
    v_anames text[] := '{}';
    v_action text;
    v_body text;
    v_digest text;
    i int;
    j int;
BEGIN
    -- The chain head first: every decision transaction of a tenant takes it before any
    -- change row, on any instance.
    SELECT h.seq, h.hash INTO v_seq, v_hash FROM audit_head AS h
        WHERE h.tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant has no audit chain head' USING ERRCODE = 'CF001';
    END IF;
    PERFORM 1 FROM webhook_endpoint AS e
        WHERE e.tenant_id = p_tenant AND e.removed_at IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tenant has webhook endpoints' USING ERRCODE = 'CF001';
    END IF;
    -- The claim: each change still Pending before its deadline, locked; one that another
    -- transaction decided meanwhile is not (re-checked after its lock is released).
    FOR r IN
        SELECT array_position(p_ids, pc.id) AS item, pc.id, pc.tool_name, pc.edited,
               pc.diff -> 'after' AS after
        FROM pending_change AS pc
        WHERE pc.id = ANY(p_ids)
          AND CASE WHEN pc.tenant_id = p_tenant AND pc.status = 'Pending'
                   THEN pc.expires_at > p_now ELSE false END
        ORDER BY 1
        FOR UPDATE OF pc
    LOOP
        IF r.tool_name <> 'create_issue' OR r.edited THEN
            RAISE EXCEPTION 'not a plain create_issue' USING ERRCODE = 'CF001';
        END IF;
        v_item := v_item || r.item;
        v_id := v_id || r.id;
        v_after := v_after || r.after;
        v_project := v_project || (r.after ->> 'projectKey');
    END LOOP;
    v_n := cardinality(v_id);
    IF v_n = 0 THEN
        RETURN;
    END IF;
    -- Execution: per project (in order of first appearance) its numbers taken at once,
    -- the issues numbered in the group's order.
    v_entity := ARRAY(SELECT gen_random_uuid()::text FROM generate_series(1, v_n));
    FOR v_key IN
        SELECT u.k FROM unnest(v_project) WITH ORDINALITY AS u(k, o)
        GROUP BY u.k ORDER BY min(u.o)
    LOOP
        IF v_key IS NULL THEN
            RAISE EXCEPTION 'no project key' USING ERRCODE = 'CF001';
        END IF;
        SELECT count(*) INTO v_count FROM unnest(v_project) AS u(k) WHERE u.k = v_key;
        UPDATE project AS p SET next_issue_number = p.next_issue_number + v_count
            WHERE p.tenant_id = p_tenant AND p.key = v_key
            RETURNING p.id, p.key, p.next_issue_number - v_count
            INTO v_pid, v_pkey, v_first;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'project no longer exists' USING ERRCODE = 'CF001';
        END IF;
        INSERT INTO issue (id, tenant_id, project_id, key, number, title, description,
                           type, status, priority, assignee, created_at, updated_at)
        SELECT m.id, p_tenant, v_pid, v_pkey || '-' || (v_first + m.n - 1)::text,
               v_first + m.n - 1, m.a ->> 'title', m.a ->> 'description', m.a ->> 'type',
               m.a ->> 'status', m.a ->> 'priority', m.a ->> 'assignee', p_now, p_now
        FROM (SELECT x.id, x.a, row_number() OVER (ORDER BY x.o) AS n
              FROM unnest(v_entity, v_after, v_project) WITH ORDINALITY AS x(id, a, k, o)
              WHERE x.k = v_key) AS m;
    END LOOP;
    -- The audit entries, chained as domain/audit.py chains them: change.approved and
    -- change.executed per change, the canonical JSON of each entry written out here.
    FOR j IN 1 .. v_n LOOP
        i := v_item[j];
        v_result := v_result || ('{"success": true, "entityId": '
                                 || to_json(v_entity[j])::text || ', "error": null}');
        FOR step IN 0 .. 1 LOOP
            v_seq := v_seq + 1;
            IF step = 0 THEN
                v_action := 'change.approved';
                v_data := v_data || '{"edited":false}'::text;
            ELSE
                v_action := 'change.executed';
                v_data := v_data || ('{"entityId":' || to_json(v_entity[j])::text
                                     || ',"error":null,"success":true}');
            END IF;
            v_body := '{"action":' || to_json(v_action)::text
                || ',"actor":{"id":' || to_json(p_actor_id[i])::text
                || ',"name":' || to_json(p_actor_name[i])::text
                || ',"type":' || to_json(p_actor_type[i])::text
                || '},"at":' || to_json(p_at_iso)::text
                || ',"changeId":' || to_json(v_id[j])::text
                || ',"data":' || v_data[cardinality(v_data)]
                || ',"seq":' || v_seq::text || '}';
            v_digest := encode(sha256(convert_to(v_hash || v_body, 'UTF8')), 'hex');
            v_seqs := v_seqs || v_seq;
            v_actions := v_actions || v_action;
            v_changes := v_changes || v_id[j];
            v_types := v_types || p_actor_type[i];
            v_aids := v_aids || left(p_actor_id[i], 200);
            v_anames := v_anames || left(p_actor_name[i], 200);
            v_prevs := v_prevs || v_hash;
            v_hashes := v_hashes || v_digest;
            v_hash := v_digest;
        END LOOP;
    END LOOP;
    INSERT INTO audit_entry (tenant_id, seq, at, actor_type, actor_id, actor_name, action,
                             change_id, data, prev_hash, hash)
    SELECT p_tenant, e.seq, p_at, e.actor_type, e.actor_id, e.actor_name, e.action,
           e.change_id, e.data::json, e.prev_hash, e.hash
    FROM unnest(v_seqs, v_types, v_aids, v_anames, v_actions, v_changes, v_data, v_prevs,
                v_hashes)
        AS e(seq, actor_type, actor_id, actor_name, action, change_id, data, prev_hash,
             hash);
    UPDATE audit_head AS h SET seq = v_seq, hash = v_hash WHERE h.tenant_id = p_tenant;
    -- The decisions themselves: status, decider, result, what the caller announces.
    RETURN QUERY
    WITH decided AS (
        UPDATE pending_change AS pc
        SET status = 'Approved', decided_at = p_now, decided_by = p_by[d.item],
            reason = NULL, execution_result = d.result::json, entity_id = d.entity
        FROM unnest(v_item, v_id, v_result, v_entity) AS d(item, id, result, entity)
        WHERE pc.id = ANY(v_id) AND pc.id = d.id
        RETURNING pc.*)
    SELECT * FROM decided;
END
$fn$
"""


def upgrade() -> None:
    """Create the function (PostgreSQL)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # as written: no bind parameters in the body
        bind.exec_driver_sql(FUNCTION)


def downgrade() -> None:
    """Drop the function (PostgreSQL): decisions then all go the Python way."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS colaflow_decide_group(text, timestamptz, "
                   "timestamptz, text, text[], text[], text[], text[], text[])")
