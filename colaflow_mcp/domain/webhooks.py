"""Outbound webhooks, the domain's part: endpoints (added and removed by operators, with
their ``webhook.added`` / ``webhook.removed`` audit entries), the event types, and the
recorder that queues one delivery per event and matching endpoint inside the transaction
that makes the event (``domain/recording.py``), so a delivery exists if and only if its
proposal or decision committed. Sending is delivery's job (``delivery/webhooks.py``).

A delivery's body is fixed when it is queued: ``{"type", "timestamp", "data": change
JSON}``; its id (``msg_…``) is the ``webhook-id`` of every attempt.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, update
from sqlalchemy.util.concurrency import in_greenlet
from sqlmodel import Session, col, select

from colaflow_mcp.domain import audit, recording
from colaflow_mcp.domain.errors import InvalidArguments, NotFound
from colaflow_mcp.domain.netguard import Resolver, check_url, system_resolver
from colaflow_mcp.domain.recording import Actor, Transition
from colaflow_mcp.domain.representation import change_to_json, iso
from colaflow_mcp.store import prepared, statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.native import native
from colaflow_mcp.store.tables import (
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)

CREATED = "pending_change.created"
APPROVED = "pending_change.approved"
REJECTED = "pending_change.rejected"
EXPIRED = "pending_change.expired"
EVENTS = (CREATED, APPROVED, REJECTED, EXPIRED)
# Which transitions are events (an approval's execution result is in its change JSON).
_EVENT_OF = {recording.PROPOSED: CREATED, recording.APPROVED: APPROVED,
             recording.REJECTED: REJECTED, recording.EXPIRED: EXPIRED}
MAX_ENDPOINTS_PER_TENANT = 100


def new_secret() -> str:
    """A signing secret, Standard Webhooks style: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_delivery_id() -> str:
    """A ``webhook-id``: ``msg_`` + 32 hex digits."""
    return "msg_" + uuid.uuid4().hex


def parse_events(raw: object) -> list[str]:
    """An event filter (a list, or comma-separated text; empty: every event), validated."""
    if raw is None or raw == "":
        return list(EVENTS)
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidArguments("events must be a comma-separated list of event types")
    chosen = [i.strip() for i in items if i.strip()]
    unknown = [i for i in chosen if i not in EVENTS]
    if unknown:
        raise InvalidArguments(f"unknown event type {unknown[0][:64]!r}; one of: "
                               f"{', '.join(EVENTS)}")
    return [e for e in EVENTS if e in chosen] or list(EVENTS)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs and the audit trail show (a path or
    query may hold a secret token, as chat services' webhook URLs do)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def endpoint_json(row: WebhookEndpoint, tenant_slug: str | None = None) -> dict[str, Any]:
    """An endpoint as ``webhooks list`` shows it (never its secret)."""
    data: dict[str, Any] = {"id": row.id, "url": row.url, "events": list(row.events),
                            "createdAt": iso(row.created_at)}
    if tenant_slug is not None:
        data["tenant"] = tenant_slug
    if row.removed_at is not None:
        data["removedAt"] = iso(row.removed_at)
    return data


def _facts(row: WebhookEndpoint) -> dict[str, Any]:
    return {"webhookId": row.id, "url": origin_of(row.url), "events": list(row.events)}


async def add_endpoint(db: Database, tenant: Tenant, url: object, events: object = None, *,
                       allow_private: bool = False, actor: Actor | None = None,
                       resolve: Resolver = system_resolver) -> WebhookEndpoint:
    """Check the URL (http(s), public addresses unless allowed) and the filter, then store
    the endpoint with its new secret and its ``webhook.added`` audit entry."""
    chosen = parse_events(events)
    target = await check_url(url, allow_private, resolve)
    row = WebhookEndpoint(id="ep_" + uuid.uuid4().hex, tenant_id=tenant.id, url=target.url,
                          events=chosen, secret=new_secret())
    added = Transition(recording.WEBHOOK_ADDED, tenant.id, actor or Actor.operator(),
                       data=_facts(row))

    def insert(s: Session) -> None:
        live = s.exec(select(WebhookEndpoint.id).where(
            WebhookEndpoint.tenant_id == tenant.id,
            col(WebhookEndpoint.removed_at).is_(None))).all()
        if len(live) >= MAX_ENDPOINTS_PER_TENANT:
            raise InvalidArguments(f"a tenant has at most {MAX_ENDPOINTS_PER_TENANT} "
                                   "webhook endpoints; remove one first")
        s.add(row)
        s.flush()
        audit.record(s, [added])

    await db.transact(insert)
    return row


async def list_endpoints(db: Database, tenant: Tenant) -> list[WebhookEndpoint]:
    """A tenant's live endpoints, oldest first."""
    async with db.read() as s:
        rows = await s.exec(select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant.id, col(WebhookEndpoint.removed_at).is_(None))
            .order_by(col(WebhookEndpoint.created_at)))
        return list(rows)


async def get_endpoint(db: Database, endpoint_id: str, tenant: Tenant | None = None
                       ) -> WebhookEndpoint:
    """An endpoint by id (in ``tenant``, when given); NotFound otherwise, foreign or not."""
    async with db.read() as s:
        row = await s.get(WebhookEndpoint, endpoint_id.strip()[:64])
    if row is None or (tenant is not None and row.tenant_id != tenant.id):
        raise NotFound(f"no webhook {endpoint_id[:64]!r}")
    return row


async def remove_endpoint(db: Database, endpoint_id: str, tenant: Tenant | None = None,
                          actor: Actor | None = None) -> WebhookEndpoint:
    """Remove an endpoint (with its ``webhook.removed`` entry, the first time): it gets no
    new deliveries, and those still waiting end as failed."""
    found = await get_endpoint(db, endpoint_id, tenant)
    who = actor or Actor.operator()

    def remove(s: Session) -> WebhookEndpoint:
        row = s.get(WebhookEndpoint, found.id, with_for_update=True)
        assert row is not None
        if row.removed_at is not None:
            return row
        row.removed_at = utcnow()
        s.add(row)
        s.exec(update(WebhookDelivery).where(
            col(WebhookDelivery.endpoint_id) == row.id,
            col(WebhookDelivery.state) == "pending").values(
            state="failed", finished_at=row.removed_at))
        s.flush()
        audit.record(s, [Transition(recording.WEBHOOK_REMOVED, row.tenant_id, who,
                                    data=_facts(row))])
        return row

    return await db.transact(remove)


async def deliveries(db: Database, endpoint: WebhookEndpoint, limit: int = 50
                     ) -> list[dict[str, Any]]:
    """An endpoint's newest deliveries, each with its attempts (oldest first)."""
    async with db.read() as s:
        rows = (await s.exec(select(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == endpoint.id)
            .order_by(col(WebhookDelivery.created_at).desc()).limit(limit))).all()
        ids = [r.id for r in rows]
        tries = (await s.exec(select(WebhookAttempt).where(
            col(WebhookAttempt.delivery_id).in_(ids))
            .order_by(col(WebhookAttempt.attempt)))).all() if ids else []
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for t in tries:
        by_delivery.setdefault(t.delivery_id, []).append({
            "attempt": t.attempt, "at": iso(t.at), "statusCode": t.status_code,
            "latencyMs": round(t.latency_ms, 1), "error": t.error})
    return [{"id": r.id, "type": r.event_type, "changeId": r.change_id, "state": r.state,
             "attempts": by_delivery.get(r.id, []), "attemptCount": r.attempts,
             "createdAt": iso(r.created_at),
             "nextAttemptAt": iso(r.next_attempt_at) if r.state == "pending" else None,
             "finishedAt": iso(r.finished_at)} for r in rows]


@dataclass
class WebhookRecorder:
    """The recorder that queues deliveries (see the module docstring); ``on_commit`` is
    called (from whichever thread committed) once a transaction that queued some has
    committed: the sender's doorbell."""

    first_delay: float = 0.0
    on_commit: Callable[[], None] | None = None

    def __call__(self, s: Session, transitions: Sequence[Transition]) -> None:
        rows: list[dict[str, Any]] = []
        targets: dict[str, list[tuple[str, list[str]]]] = {}
        now = utcnow()
        due = now if self.first_delay <= 0 else now + timedelta(seconds=self.first_delay)
        conn = s.connection()
        fast = (native(conn) if conn.dialect.name == "postgresql" and in_greenlet()
                else None)
        for t in transitions:
            kind = _EVENT_OF.get(t.action)
            if kind is None or t.change is None:
                continue
            if t.tenant_id not in targets:
                # On PostgreSQL on asyncpg itself: through the adapter this round trip
                # cost several times the driver's (store/native.py).
                found = (fast.fetch(statements.NATIVE_WEBHOOK_TARGETS, t.tenant_id)
                         if fast is not None else prepared.run(
                             conn, statements.WEBHOOK_TARGETS, {"p_tenant": t.tenant_id}))
                targets[t.tenant_id] = [(str(r[0]), list(r[1])) for r in found]
            wanted = [ep for ep, events in targets[t.tenant_id] if kind in events]
            if not wanted:
                continue
            body = json.dumps({"type": kind, "timestamp": iso(now),
                               "data": change_to_json(t.change)},
                              separators=(",", ":"), ensure_ascii=False)
            rows.extend({"id": new_delivery_id(), "endpoint_id": ep, "tenant_id": t.tenant_id,
                         "event_type": kind, "change_id": t.change.id, "body": body,
                         "state": "pending", "attempts": 0, "created_at": now,
                         "next_attempt_at": due} for ep in wanted)
        if rows:
            conn.execute(statements.INSERT_WEBHOOK_DELIVERY, rows)
            if self.on_commit is not None:
                ring = self.on_commit
                event.listen(s, "after_commit", lambda _s: ring(), once=True)


__all__ = ["APPROVED", "CREATED", "EVENTS", "EXPIRED", "REJECTED", "WebhookRecorder",
           "add_endpoint", "deliveries", "endpoint_json", "get_endpoint", "list_endpoints",
           "new_delivery_id", "new_secret", "origin_of", "parse_events", "remove_endpoint"]
