"""The audit trail: one hash chain per tenant, appended inside the transaction it records.

Each entry's ``hash`` is ``sha256(prevHash + canonical JSON of {seq, at, actor, action,
changeId, data})`` (canonical: sorted keys, no spaces, UTF-8), the first entry's
``prevHash`` 64 zeros. Appending takes the tenant's ``audit_head`` row lock first
(``store.statements.TAKE_AUDIT_SEQ``), so concurrent writers on any number of instances
make one gap-free chain per tenant, and two tenants never wait for each other.
:meth:`AuditLog.verify` recomputes a chain and names the first entry that was edited,
deleted, inserted or moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.errors import Forbidden, InvalidArguments
from colaflow_mcp.domain.ids import parse_change_id
from colaflow_mcp.domain.recording import Transition
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import AuditEntry, AuditHead, utcnow

GENESIS = "0" * 64
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_BATCH = 1000  # rows per read when verifying or exporting a whole chain


def canonical(value: Any) -> str:
    """The one JSON text of a value that is hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """``sha256(prevHash + canonical JSON of the entry)``, hex."""
    return hashlib.sha256((prev_hash + canonical(body)).encode()).hexdigest()


def _body(seq: int, at: str | None, actor: dict[str, Any], action: str,
          change_id: str | None, data: Any) -> dict[str, Any]:
    return {"seq": seq, "at": at, "actor": actor, "action": action, "changeId": change_id,
            "data": data}


def body_of(row: AuditEntry) -> dict[str, Any]:
    """What an entry's hash covers, rebuilt from its stored columns."""
    actor = {"type": row.actor_type, "id": row.actor_id, "name": row.actor_name}
    return _body(row.seq, iso(row.at), actor, row.action, row.change_id, row.data)


def entry_json(row: AuditEntry) -> dict[str, Any]:
    """An entry as the API and ``audit export`` show it."""
    return {**body_of(row), "prevHash": row.prev_hash, "hash": row.hash}


def _millis(at: datetime) -> datetime:
    # Stored and hashed at the precision the JSON shows, so the hash can be recomputed.
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


# ``Session.info`` key: the chain heads (seq, hash) this transaction read under their lock.
_HELD = "colaflow.audit_heads"
# ``Session.info`` key: decisions' execution results the next append writes with its own
# statement on PostgreSQL (``carry_results``).
_RESULTS = "colaflow.audit_carried_results"


def record(s: Session, transitions: Sequence[Transition]) -> None:
    """The audit recorder (see ``domain/recording.py``): one entry per transition."""
    by_tenant: dict[str, list[Transition]] = {}
    for t in transitions:
        by_tenant.setdefault(t.tenant_id, []).append(t)
    held: dict[str, tuple[int, str]] = s.info.get(_HELD, {})
    for tenant_id, items in by_tenant.items():
        append(s.connection(), tenant_id, items, held.pop(tenant_id, None), s)


def lock_chains(s: Session, tenant_id: str) -> None:
    """Take the tenant's chain head first (PostgreSQL), before the row locks decisions
    take (the change, projects, issues): then every decision transaction of a tenant, on
    any instance and however many decisions it holds, takes its locks in one order (head
    first) and two of them never deadlock."""
    fast = native(s.connection())
    if fast is not None:
        found = fast.fetch(statements.NATIVE_LOCK_AUDIT_HEAD, tenant_id)
        head = found[0] if found else None
        if head is not None:  # appended later without reading it again
            hold(s, tenant_id, int(head[0]), str(head[1]))


def hold(s: Session, tenant_id: str, seq: int, hash_: str) -> None:
    """Note the tenant's chain head as this transaction read it under its lock (taken by
    the caller's own statement, before any other row lock: see ``lock_chains``)."""
    s.info.setdefault(_HELD, {})[tenant_id] = (seq, hash_)


def carry_results(s: Session, ids: list[str], results: list[str],
                  entity_ids: list[str | None]) -> None:
    """Hand decisions' execution results (JSON text) to the next append of a held head
    (PostgreSQL), which writes them with its own statement; ``carried_results`` takes back
    whatever no append took."""
    s.info[_RESULTS] = (ids, results, entity_ids)


def carried_results(s: Session) -> tuple[list[str], list[str], list[str | None]] | None:
    """The results ``carry_results`` handed over that no append wrote (then the caller
    writes them)."""
    carried: tuple[list[str], list[str], list[str | None]] | None = s.info.pop(_RESULTS, None)
    return carried


def append(conn: Connection, tenant_id: str, transitions: Sequence[Transition],
           held: tuple[int, str] | None = None, s: Session | None = None) -> int:
    """Append entries to the tenant's chain in the caller's transaction; the last seq.

    Three statements however many entries: take the seqs (locking the head), insert the
    entries, move the head's hash. The lock is held until the transaction ends, so callers
    append last, after their other work. ``held``: the head (seq, hash) as this transaction
    already read it under its lock (``lock_chains``, PostgreSQL): then one statement,
    which also writes the results ``s`` carries (``carry_results``).
    """
    if held is not None:
        last, prev = held[0] + len(transitions), held[1]
    else:
        params = {"p_tenant": tenant_id, "p_count": len(transitions)}
        taken = prepared.run(conn, statements.TAKE_AUDIT_SEQ, params)
        if not taken:  # the tenant's first entry: make its head, then take as usual
            conn.execute(statements.START_AUDIT_HEAD[conn.dialect.name],
                         {"p_tenant": tenant_id, "p_hash": GENESIS})
            taken = prepared.run(conn, statements.TAKE_AUDIT_SEQ, params)
            assert taken
        last, prev = int(taken[0][0]), str(taken[0][1])
    at = _millis(utcnow())
    rows, texts = [], []
    for seq, t in enumerate(transitions, start=last - len(transitions) + 1):
        # Stored exactly as hashed: what reads back is plain JSON (lists, not tuples).
        texts.append(canonical(dict(t.data)))
        data = json.loads(texts[-1])
        digest = chain_hash(prev, _body(seq, iso(at), t.actor.to_json(), t.action,
                                        t.change_id, data))
        rows.append({"tenant_id": tenant_id, "seq": seq, "at": at,
                     "actor_type": t.actor.type, "actor_id": t.actor.id[:200],
                     "actor_name": t.actor.name[:200], "action": t.action,
                     "change_id": t.change_id, "data": data, "prev_hash": prev,
                     "hash": digest})
        prev = digest
    if held is not None:  # PostgreSQL (lock_chains): entries and the head in one statement
        fast = native(conn)
        assert fast is not None
        args = [tenant_id, last, prev, at, *([r[k] for r in rows] for k in (
            "seq", "actor_type", "actor_id", "actor_name", "action", "change_id")),
            texts, [r["prev_hash"] for r in rows], [r["hash"] for r in rows]]
        carried = carried_results(s) if s is not None else None
        if carried is not None:  # and the decisions' results, still one statement
            fast.execute(statements.NATIVE_APPEND_AUDIT_RECORD_RESULTS, *args, *carried)
        else:
            fast.execute(statements.NATIVE_APPEND_AUDIT, *args)
        return last
    prepared.run(conn, statements.INSERT_AUDIT_ENTRY, rows)
    prepared.run(conn, statements.SET_AUDIT_HEAD, {"p_tenant": tenant_id, "p_hash": prev})
    return last


@dataclass(frozen=True)
class Verdict:
    """The result of verifying one chain: how many entries, and the first broken one."""

    entries: int
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing edited, deleted, inserted or reordered."""
        return self.broken_seq is None

    def describe(self) -> str:
        """``ok: N entries`` or ``broken at seq S: why``."""
        if self.ok:
            return f"ok: {self.entries} entries"
        return f"broken at seq {self.broken_seq}: {self.problem}"


class AuditLog:
    """Reads of the trail: the reviewer's page, and whole chains for verify and export."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, principal: Principal, change_id: object = None, after: object = None,
                   limit: object = None) -> dict[str, Any]:
        """``{"entries": [...], "next"}``: the tenant's entries after seq ``after``, oldest
        first, optionally of one change; ``next`` is the ``after`` of the next page."""
        if principal.kind != "reviewer":
            raise Forbidden("only reviewers read the audit trail")
        after_seq = _int(after, "after", 0, 0, 2**62)
        size = _int(limit, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        query = (select(AuditEntry).where(col(AuditEntry.tenant_id) == principal.tenant_id)
                 .where(col(AuditEntry.seq) > after_seq))
        if change_id is not None and change_id != "":
            query = query.where(col(AuditEntry.change_id) == parse_change_id(change_id))
        async with self.db.read() as s:
            rows = (await s.exec(query.order_by(col(AuditEntry.seq)).limit(size))).all()
        return {"entries": [entry_json(r) for r in rows],
                "next": rows[-1].seq if len(rows) == size else None}

    async def entries(self, tenant_id: str) -> AsyncIterator[AuditEntry]:
        """Every entry of a tenant's chain in seq order, read in batches."""
        after = 0
        while True:
            async with self.db.read() as s:
                rows = (await s.exec(
                    select(AuditEntry).where(col(AuditEntry.tenant_id) == tenant_id)
                    .where(col(AuditEntry.seq) > after)
                    .order_by(col(AuditEntry.seq)).limit(_BATCH))).all()
            for row in rows:
                yield row
            if len(rows) < _BATCH:
                return
            after = rows[-1].seq

    async def verify(self, tenant_id: str) -> Verdict:
        """Recompute the tenant's chain against its head, in one consistent snapshot."""
        async with self.db.read() as s:
            if not self.db.is_sqlite:
                # One snapshot for every read: appends committed meanwhile are not seen.
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            head = await s.get(AuditHead, tenant_id)
            return await _walk(s, tenant_id, head)


async def _walk(s: AsyncSession, tenant_id: str, head: AuditHead | None) -> Verdict:
    """Walk the chain (SQLite: the session's read transaction is the snapshot)."""
    expected, prev, count = 1, GENESIS, 0
    after = 0
    while True:
        rows = (await s.exec(
            select(AuditEntry).where(col(AuditEntry.tenant_id) == tenant_id)
            .where(col(AuditEntry.seq) > after)
            .order_by(col(AuditEntry.seq)).limit(_BATCH))).all()
        for row in rows:
            if row.seq != expected:
                return Verdict(count, expected, f"seq {expected} is missing (the next entry "
                                                f"is seq {row.seq}): deleted or renumbered")
            if row.prev_hash != prev:
                what = "the start of the chain" if expected == 1 else f"seq {expected - 1}"
                return Verdict(count, row.seq, f"prevHash does not match the hash of {what}: "
                                               "an entry before it was inserted, deleted or moved")
            if chain_hash(prev, body_of(row)) != row.hash:
                return Verdict(count, row.seq, "hash does not match the entry: edited")
            prev, expected, count = row.hash, expected + 1, count + 1
        if len(rows) < _BATCH:
            break
        after = rows[-1].seq
    last = expected - 1
    head_seq, head_hash = (0, GENESIS) if head is None else (head.seq, head.hash)
    if head_seq > last:
        return Verdict(count, last + 1, f"seq {last + 1} is missing (the chain's head is at "
                                        f"seq {head_seq}): deleted")
    if head_seq < last:
        return Verdict(count, head_seq + 1, f"seq {head_seq + 1} is past the chain's head "
                                            f"(seq {head_seq}): inserted")
    if head_hash != prev:
        return Verdict(count, last, "the chain's head does not match the last entry's hash")
    return Verdict(count)


def _int(value: object, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidArguments(f"{name} must be an integer") from None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArguments(f"{name} must be an integer between {low} and {high}")
    return value


__all__ = ["GENESIS", "AuditLog", "Verdict", "append", "body_of", "canonical", "chain_hash",
           "entry_json", "record"]
