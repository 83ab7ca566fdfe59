"""Prebuilt Core statements for the hot paths (decisions, announcements, issue numbers,
audit appends, webhook deliveries).

Building an ORM or Core statement per call cost more than running it (see
benchmarks/RESULTS.md), so the decision path binds parameters into these instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, and_, bindparam, case, false, func, select, true
from sqlalchemy.dialects import postgresql, sqlite

from colaflow_mcp.store.tables import (
    AuditEntry,
    AuditHead,
    Issue,
    PendingChange,
    Project,
    Status,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

_PC: Table = PendingChange.__table__  # type: ignore[attr-defined]
_PROJECT: Table = Project.__table__  # type: ignore[attr-defined]
_ISSUE: Table = Issue.__table__  # type: ignore[attr-defined]
_AUDIT: Table = AuditEntry.__table__  # type: ignore[attr-defined]
_HEAD: Table = AuditHead.__table__  # type: ignore[attr-defined]


def _claim_statement(only_overdue: bool, edit: bool = False) -> Any:
    """Decide one pending change, in its tenant, before (or, to expire, after) its deadline.

    Parameters: ``p_id``, ``p_tenant``, ``p_now``, ``p_status``, ``p_by``, ``p_reason``
    (with ``edit``, also the reviewer's ``p_arguments``, ``p_diff``, ``p_summary``,
    ``p_entity``: written by the same statement, so only the winner's edit is applied);
    RETURNING the whole row, so only the caller whose statement changed it goes on.
    """
    c = _PC.c
    now: Any = bindparam("p_now", type_=c.expires_at.type)
    values: dict[str, Any] = {
        "status": bindparam("p_status"), "decided_at": now, "decided_by": bindparam("p_by"),
        "reason": bindparam("p_reason")}
    if edit:
        values.update(
            arguments=bindparam("p_arguments", type_=c.arguments.type),
            diff=bindparam("p_diff", type_=c.diff.type), summary=bindparam("p_summary"),
            entity_id=bindparam("p_entity"), edited=True, edited_by=bindparam("p_by"))
    return _PC.update().where(
        c.id == bindparam("p_id"), c.tenant_id == bindparam("p_tenant"),
        c.status == Status.PENDING.value,
        c.expires_at <= now if only_overdue else c.expires_at > now,
    ).values(**values).returning(*c)


CLAIM = _claim_statement(False)
CLAIM_OVERDUE = _claim_statement(True)
CLAIM_EDITED = _claim_statement(False, edit=True)

# CLAIM / CLAIM_OVERDUE of ``n`` distinct changes with the same decision in one statement
# (SQLite; PostgreSQL: NATIVE_CLAIM_MANY): ``p_id0`` … ``p_id{n-1}`` for ``p_id``, the
# rest as CLAIM; RETURNING the row of each change that was still claimable, in no
# particular order. Built once per (only_overdue, n) and kept (``prepared`` compiles each
# once): n is at most the decision group's size.
_CLAIM_SETS: dict[tuple[bool, int], Any] = {}


def claim_set(only_overdue: bool, n: int) -> Any:
    """The set-wise CLAIM (``only_overdue``: CLAIM_OVERDUE) of ``n`` changes."""
    found = _CLAIM_SETS.get((only_overdue, n))
    if found is None:
        c = _PC.c
        now: Any = bindparam("p_now", type_=c.expires_at.type)
        # The tenant, state and deadline test inside a CASE: as plain terms, SQLite's
        # planner (no statistics) took ``ix_pending_change_status_expires`` (every
        # pending change before the deadline) or ``ix_pending_change_tenant_created``
        # (every change of the tenant) instead of the ids' primary keys.
        found = _CLAIM_SETS[only_overdue, n] = _PC.update().where(
            c.id.in_([bindparam(f"p_id{i}") for i in range(n)]),
            case((and_(c.tenant_id == bindparam("p_tenant"), c.status == Status.PENDING.value,
                       c.expires_at <= now if only_overdue else c.expires_at > now),
                  true()), else_=false()),
        ).values(status=bindparam("p_status"), decided_at=now,
                 decided_by=bindparam("p_by"), reason=bindparam("p_reason")).returning(*c)
    return found

# An approved change's execution result (``p_id``, ``p_result``, ``p_entity``).
RECORD_RESULT = _PC.update().where(_PC.c.id == bindparam("p_id")).values(
    execution_result=bindparam("p_result", type_=_PC.c.execution_result.type),
    entity_id=bindparam("p_entity"))

# Published decisions (``p_ids``, ``p_now``); rows already marked stay as they are. The
# "not yet marked" test inside a CASE: as a plain ``announced_at IS NULL``, without
# statistics PostgreSQL's planner took ``ix_pending_change_unannounced`` and read every
# undecided change per batch instead of the ids' primary keys (see _CLAIMABLE below).
MARK_ANNOUNCED = _PC.update().where(
    _PC.c.id.in_(bindparam("p_ids", expanding=True)),
    case((_PC.c.announced_at.is_(None), true()), else_=false()),
).values(announced_at=bindparam("p_now", type_=_PC.c.announced_at.type))

# Take ``p_count`` issue numbers of a project (``p_tenant``, ``p_key``): RETURNING its id,
# key and the next number after them (SQLite; PostgreSQL: NATIVE_CREATE_ISSUES).
TAKE_ISSUE_NUMBERS = (
    _PROJECT.update()
    .where(_PROJECT.c.tenant_id == bindparam("p_tenant"), _PROJECT.c.key == bindparam("p_key"))
    .values(next_issue_number=_PROJECT.c.next_issue_number + bindparam("p_count"))
    .returning(_PROJECT.c.id, _PROJECT.c.key, _PROJECT.c.next_issue_number))

INSERT_ISSUE = _ISSUE.insert()

# -- proposals ----------------------------------------------------------------------------

# A tenant's project by key (``p_tenant``, ``p_key``): its id, or no row.
PROJECT_ID_BY_KEY = select(_PROJECT.c.id).where(
    _PROJECT.c.tenant_id == bindparam("p_tenant"), _PROJECT.c.key == bindparam("p_key"))

# A new pending change: every column given (see ``pending_change_row``).
INSERT_PENDING_CHANGE = _PC.insert()
_PC_COLUMNS = tuple((column.name, column.key) for column in _PC.columns)
# The attributes of the columns a ``RETURNING *c`` of pending_change gives, in its order
# (CLAIM, CLAIM_OVERDUE, CLAIM_EDITED).
PC_KEYS = tuple(key for _, key in _PC_COLUMNS)


def pending_change_row(change: PendingChange) -> dict[str, Any]:
    """The values of every column of a new change (the model's defaults included, which
    Core would not apply), for ``INSERT_PENDING_CHANGE``."""
    return {name: getattr(change, key) for name, key in _PC_COLUMNS}


# -- the audit chain (see domain/audit.py) -------------------------------------------------

# Take ``p_count`` sequence numbers of a tenant's chain (``p_tenant``): RETURNING the new
# last seq and the previous head hash. The row lock it takes serializes one tenant's
# appenders until commit, on every instance; other tenants' heads are other rows.
TAKE_AUDIT_SEQ = (
    _HEAD.update().where(_HEAD.c.tenant_id == bindparam("p_tenant"))
    .values(seq=_HEAD.c.seq + bindparam("p_count"))
    .returning(_HEAD.c.seq, _HEAD.c.hash))

# The chain's head on first use (``p_tenant``, ``p_hash``: the genesis hash); a
# concurrent first use is no error (the UPDATE above then waits on the row it made).
START_AUDIT_HEAD = {
    name: dialect.insert(_HEAD).values(
        tenant_id=bindparam("p_tenant"), seq=0, hash=bindparam("p_hash"),
    ).on_conflict_do_nothing(index_elements=["tenant_id"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}

SET_AUDIT_HEAD = _HEAD.update().where(_HEAD.c.tenant_id == bindparam("p_tenant")).values(
    hash=bindparam("p_hash"))

INSERT_AUDIT_ENTRY = _AUDIT.insert()

# -- webhooks (see domain/webhooks.py and delivery/webhooks.py) ----------------------------

_ENDPOINT: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_DELIVERY: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
_ATTEMPT: Table = WebhookAttempt.__table__  # type: ignore[attr-defined]

# A tenant's live endpoints (``p_tenant``): what a transaction's events are queued for.
WEBHOOK_TARGETS = select(_ENDPOINT.c.id, _ENDPOINT.c.events).where(
    _ENDPOINT.c.tenant_id == bindparam("p_tenant"), _ENDPOINT.c.removed_at.is_(None))

# WEBHOOK_TARGETS on asyncpg itself (store/native.py): $1 tenant.
NATIVE_WEBHOOK_TARGETS = ("SELECT id, events FROM webhook_endpoint "
                          "WHERE tenant_id = $1 AND removed_at IS NULL")

INSERT_WEBHOOK_DELIVERY = _DELIVERY.insert()
INSERT_WEBHOOK_ATTEMPT = _ATTEMPT.insert()


def _due_ids(expired: bool, limit_busy: bool, skip_locked: bool) -> Any:
    """Ids of deliveries due now (``p_now``), at most ``p_limit``, none for the endpoints
    in ``p_busy``: pending ones whose time came, oldest due first, or (``expired``) ones
    claimed by an instance whose lease ran out (it died mid-attempt). Each is one range of
    ``ix_webhook_delivery_due`` (an ``OR`` of the two would scan the table)."""
    d = _DELIVERY.c
    now: Any = bindparam("p_now", type_=d.next_attempt_at.type)
    if expired:
        query = select(d.id).where(d.state == "delivering", d.lease_until < now)
    else:
        query = select(d.id).where(d.state == "pending", d.next_attempt_at <= now)
    if limit_busy:
        query = query.where(d.endpoint_id.not_in(bindparam("p_busy", expanding=True)))
    if not expired:
        query = query.order_by(d.next_attempt_at)
    query = query.limit(bindparam("p_limit"))
    return query.with_for_update(skip_locked=True) if skip_locked else query


def _claim_deliveries(expired: bool, limit_busy: bool, skip_locked: bool) -> Any:
    """Claim due deliveries for this instance (``p_me``) until ``p_lease``: one statement,
    RETURNING what an attempt needs. On PostgreSQL the rows another instance is claiming
    are skipped (``FOR UPDATE SKIP LOCKED``), not waited for; SQLite has one writer."""
    d, e = _DELIVERY.c, _ENDPOINT.c
    due = _due_ids(expired, limit_busy, skip_locked).scalar_subquery()
    return (_DELIVERY.update()
            .where(d.id.in_(due))
            .values(state="delivering", attempts=d.attempts + 1,
                    lease_until=bindparam("p_lease", type_=d.lease_until.type),
                    claimed_by=bindparam("p_me"))
            .returning(d.id, d.endpoint_id, d.event_type, d.body, d.attempts, d.created_at,
                       select(e.url).where(e.id == d.endpoint_id).scalar_subquery(),
                       select(e.secret).where(e.id == d.endpoint_id).scalar_subquery()))


# Keyed by (dialect, lease ran out (else: pending and due), whether some endpoints are busy).
CLAIM_WEBHOOK_DELIVERIES = {
    (dialect, expired, busy): _claim_deliveries(expired, busy, dialect == "postgresql")
    for dialect in ("postgresql", "sqlite") for expired in (False, True)
    for busy in (False, True)
}

# The end of one attempt (``p_id``, ``p_me``, ``p_attempt``): the delivery's new state,
# only if this instance's claim still holds (a lease that ran out is someone else's now).
FINISH_WEBHOOK_ATTEMPT = _DELIVERY.update().where(
    _DELIVERY.c.id == bindparam("p_id"), _DELIVERY.c.claimed_by == bindparam("p_me"),
    _DELIVERY.c.attempts == bindparam("p_attempt"), _DELIVERY.c.state == "delivering",
).values(state=bindparam("p_state"),
         next_attempt_at=bindparam("p_next", type_=_DELIVERY.c.next_attempt_at.type),
         finished_at=bindparam("p_finished", type_=_DELIVERY.c.finished_at.type),
         lease_until=None, claimed_by=None)

# When the sender should look next: the earliest due time of a pending delivery (not for
# the endpoints in ``p_busy``, with True).
NEXT_WEBHOOK_DUE = {
    busy: select(func.min(_DELIVERY.c.next_attempt_at)).where(
        _DELIVERY.c.state == "pending",
        *([_DELIVERY.c.endpoint_id.not_in(bindparam("p_busy", expanding=True))]
          if busy else []))
    for busy in (False, True)
}

# Give back a claimed delivery unattempted (``p_id``, ``p_me``, ``p_attempt``, ``p_now``:
# when it is due again): the instance is stopping, or its endpoint is backing off.
RELEASE_WEBHOOK_DELIVERY = _DELIVERY.update().where(
    _DELIVERY.c.id == bindparam("p_id"), _DELIVERY.c.claimed_by == bindparam("p_me"),
    _DELIVERY.c.attempts == bindparam("p_attempt"), _DELIVERY.c.state == "delivering",
).values(state="pending", attempts=_DELIVERY.c.attempts - 1,
         next_attempt_at=bindparam("p_now", type_=_DELIVERY.c.next_attempt_at.type),
         lease_until=None, claimed_by=None)

# Extend a claim that waited in this instance's queue (``p_id``, ``p_me``, ``p_attempt``,
# ``p_lease``): the attempt starts only if the claim is still this instance's.
RENEW_WEBHOOK_LEASE = _DELIVERY.update().where(
    _DELIVERY.c.id == bindparam("p_id"), _DELIVERY.c.claimed_by == bindparam("p_me"),
    _DELIVERY.c.attempts == bindparam("p_attempt"), _DELIVERY.c.state == "delivering",
).values(lease_until=bindparam("p_lease", type_=_DELIVERY.c.lease_until.type))

# -- the decision path on asyncpg itself (store/native.py; PostgreSQL, positional) --------

_PC_NAMES = ", ".join(f"pc.{c.name}" for c in _PC.columns)

# Lock a tenant's chain head without moving it ($1 tenant), RETURNING it: taken first by
# a decision transaction (see domain/audit.py: lock_chains).
NATIVE_LOCK_AUDIT_HEAD = "SELECT seq, hash FROM audit_head WHERE tenant_id = $1 FOR UPDATE"

# The rows a set-wise statement touches are found by primary key only, whatever the
# table's statistics say: the other conditions on ``pending_change`` sit inside a CASE,
# which no index can serve. Written as plain conditions, with no statistics (a new
# database, autovacuum off or behind) the planner took ``ix_pending_change_tenant_created``
# or ``ix_pending_change_status_expires`` and read every change of the tenant per group:
# PostgreSQL's CPU per decision grew with the table (benchmarks/RESULTS.md, "Where
# PostgreSQL's own CPU goes"). ``pc.id = ANY(ids)`` gives the planner the rows' count.
_CLAIMABLE = (
    f"CASE WHEN pc.tenant_id = $1 AND pc.status = '{Status.PENDING.value}' "
    "THEN CASE WHEN v.overdue THEN pc.expires_at <= $2 ELSE pc.expires_at > $2 END "
    "ELSE false END")

# CLAIM for many changes of one tenant, each with its own status, decider, reason and
# whether it is an expiry (only once overdue): $1 tenant, $2 now, arrays $3 ids,
# $4 statuses, $5 deciders, $6 reasons, $7 only-overdue flags; RETURNING every column of
# each row it decided (in no particular order). An id must appear once.
NATIVE_CLAIM_MANY = (
    "UPDATE pending_change AS pc SET status = v.status, decided_at = $2, "
    "decided_by = v.decided_by, reason = v.reason "
    "FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[]) "
    "AS v(id, status, decided_by, reason, overdue) "
    f"WHERE pc.id = ANY($3::text[]) AND pc.id = v.id AND {_CLAIMABLE} "
    f"RETURNING {_PC_NAMES}")

# NATIVE_LOCK_AUDIT_HEAD and NATIVE_CLAIM_MANY in one round trip, the head locked before
# any change row: the claim's condition on the head is a one-time filter (an InitPlan run
# before the scan starts), so a transaction waiting for the head holds no change row.
# Same parameters; one row per claimed change (the columns of NATIVE_CLAIM_MANY after
# head_seq, head_hash), or one row of nulls but the head if none was claimed; head_seq
# null: the tenant has no head yet.
NATIVE_LOCK_HEAD_CLAIM_MANY = (
    "WITH head AS MATERIALIZED (SELECT seq, hash FROM audit_head WHERE tenant_id = $1 "
    "FOR UPDATE), claimed AS ("
    "UPDATE pending_change AS pc SET status = v.status, decided_at = $2, "
    "decided_by = v.decided_by, reason = v.reason "
    "FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[]) "
    "AS v(id, status, decided_by, reason, overdue) "
    "WHERE (SELECT count(*) FROM head) >= 0 "
    f"AND pc.id = ANY($3::text[]) AND pc.id = v.id AND {_CLAIMABLE} "
    f"RETURNING {_PC_NAMES}) "
    "SELECT head.seq AS head_seq, head.hash AS head_hash, claimed.* "
    "FROM (SELECT 1) AS one LEFT JOIN head ON true LEFT JOIN claimed ON true")

# Several issues in one project, numbered in array order from its next number, in one
# statement (atomic by itself): $1 tenant, $2 project key, $3 count, $4 now, arrays $5 ids,
# $6 titles, $7 descriptions, $8 types, $9 statuses, $10 priorities, $11 assignees;
# RETURNING each issue's id (no row: no such project).
NATIVE_CREATE_ISSUES = (
    "WITH taken AS (UPDATE project SET next_issue_number = next_issue_number + $3 "
    "WHERE tenant_id = $1 AND key = $2 RETURNING id, key, next_issue_number - $3 AS first) "
    "INSERT INTO issue (id, tenant_id, project_id, key, number, title, description, type, "
    "status, priority, assignee, created_at, updated_at) "
    "SELECT v.id, $1, taken.id, taken.key || '-' || (taken.first + v.ord - 1)::text, "
    "taken.first + v.ord - 1, v.title, v.description, v.type, v.status, v.priority, "
    "v.assignee, $4, $4 FROM taken, unnest($5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::text[], $10::text[], $11::text[]) WITH ORDINALITY "
    "AS v(id, title, description, type, status, priority, assignee, ord) RETURNING issue.id")

# RECORD_RESULT for many changes: arrays $1 ids, $2 results (JSON text), $3 entity ids.
NATIVE_RECORD_RESULTS = (
    "UPDATE pending_change AS pc SET execution_result = v.result::json, entity_id = v.entity "
    "FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, result, entity) "
    "WHERE pc.id = ANY($1::text[]) AND pc.id = v.id")

# INSERT_AUDIT_ENTRY for many entries and the head moved, under the head's lock taken by
# NATIVE_LOCK_AUDIT_HEAD, as one statement: $1 tenant,
# $2 the new head seq, $3 its hash, $4 at; arrays $5 seqs, $6 actor types, $7 actor ids,
# $8 actor names, $9 actions, $10 change ids, $11 data (JSON text), $12 prev hashes,
# $13 hashes.
NATIVE_APPEND_AUDIT = (
    "WITH entries AS (INSERT INTO audit_entry (tenant_id, seq, at, actor_type, actor_id, "
    "actor_name, action, change_id, data, prev_hash, hash) "
    "SELECT $1, v.seq, $4, v.actor_type, v.actor_id, v.actor_name, v.action, v.change_id, "
    "v.data::json, v.prev_hash, v.hash FROM unnest($5::bigint[], $6::text[], $7::text[], "
    "$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]) "
    "AS v(seq, actor_type, actor_id, actor_name, action, change_id, data, prev_hash, hash)) "
    "UPDATE audit_head SET seq = $2, hash = $3 WHERE tenant_id = $1")

# NATIVE_APPEND_AUDIT and NATIVE_RECORD_RESULTS in one statement (one round trip):
# NATIVE_APPEND_AUDIT's parameters, then NATIVE_RECORD_RESULTS' arrays as $14 ids,
# $15 results (JSON text), $16 entity ids.
NATIVE_APPEND_AUDIT_RECORD_RESULTS = (
    "WITH results AS (UPDATE pending_change AS pc SET execution_result = r.result::json, "
    "entity_id = r.entity FROM unnest($14::text[], $15::text[], $16::text[]) "
    "AS r(id, result, entity) WHERE pc.id = ANY($14::text[]) AND pc.id = r.id), "
    + NATIVE_APPEND_AUDIT[len("WITH "):])

# A group of plain approvals of one tenant in one statement, the function of revision
# 0006 (see domain/decide_one.py): $1 tenant, $2 now, $3 the audit entries' at, $4 its
# ISO text, arrays $5 change ids, $6 deciders, $7 actor types, $8 actor ids, $9 actor
# names; the rows it decided (every column), in no particular order. SQLSTATE CF001:
# declined, nothing written (decide the group in Python).
NATIVE_DECIDE_GROUP = ("SELECT * FROM colaflow_decide_group($1, $2, $3, $4, $5::text[], "
                       "$6::text[], $7::text[], $8::text[], $9::text[])")
DECLINED = "CF001"
