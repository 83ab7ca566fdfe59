"""Operator bootstrap, outside review: tenants, API keys, projects created directly.

Used by the command line (and tests); agents and reviewers never reach these.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError
from sqlmodel import Session, select

from colaflow_mcp.domain import audit, recording
from colaflow_mcp.domain.auth import generate_key, hash_key, key_lookup_prefix
from colaflow_mcp.domain.errors import InvalidArguments, format_validation_error
from colaflow_mcp.domain.operations.base import find_project
from colaflow_mcp.domain.operations.projects import CreateProjectArgs
from colaflow_mcp.domain.recording import Actor, Transition
from colaflow_mcp.domain.representation import iso
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import ApiKey, Project, Tenant, utcnow


async def get_or_create_tenant(db: Database, slug: str, name: str | None = None) -> Tenant:
    """The tenant with this slug, created if needed."""
    slug = slug.strip().lower()
    if not slug or len(slug) > 64 or not all(c.isalnum() or c in "-_" for c in slug):
        raise ValueError("tenant slug must be 1-64 letters, digits, '-' or '_'")
    async with db.read() as s:
        found = (await s.exec(select(Tenant).where(Tenant.slug == slug))).first()
    if found is not None:
        return found
    try:
        async with db.write() as s:
            tenant = Tenant(slug=slug, name=name or slug)
            s.add(tenant)
        return tenant
    except Exception:
        async with db.read() as s:
            found = (await s.exec(select(Tenant).where(Tenant.slug == slug))).first()
        if found is None:
            raise
        return found


async def get_tenant(db: Database, slug: str) -> Tenant | None:
    """The tenant with this slug, if any."""
    async with db.read() as s:
        return (await s.exec(select(Tenant).where(Tenant.slug == slug.strip().lower()))).first()


def _key_facts(row: ApiKey) -> dict[str, object]:
    return {"keyId": row.id, "name": row.name, "prefix": row.prefix,
            "expiresAt": iso(row.expires_at)}


async def create_api_key(
    db: Database, tenant: Tenant, name: str = "", expires_at: datetime | None = None,
    actor: Actor | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key's hash (and its ``key.created`` audit entry); return the row and the
    key itself (shown once)."""
    key = generate_key()
    prefix = key_lookup_prefix(key)
    assert prefix is not None
    row = ApiKey(
        tenant_id=tenant.id, name=name, prefix=prefix, key_hash=hash_key(key),
        expires_at=expires_at,
    )
    created = Transition(recording.KEY_CREATED, tenant.id, actor or Actor.operator(),
                         data=_key_facts(row))

    def insert(s: Session) -> None:
        s.add(row)
        s.flush()
        audit.record(s, [created])

    await db.transact(insert)
    return row, key


async def list_api_keys(db: Database, tenant: Tenant) -> list[ApiKey]:
    """A tenant's keys, oldest first (hashes only, never the keys)."""
    async with db.read() as s:
        rows = await s.exec(
            select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.created_at)  # type: ignore[arg-type]
        )
        return list(rows)


async def revoke_api_key(db: Database, key_id: str, actor: Actor | None = None
                         ) -> ApiKey | None:
    """Mark a key revoked (with its ``key.revoked`` audit entry, the first time); None if
    there is no such key."""
    who = actor or Actor.operator()

    def revoke(s: Session) -> ApiKey | None:
        # Locked, so that two revocations at once record one entry.
        row = s.get(ApiKey, key_id, with_for_update=True)
        if row is None or row.revoked_at is not None:
            return row
        row.revoked_at = utcnow()
        s.add(row)
        s.flush()
        audit.record(s, [Transition(recording.KEY_REVOKED, row.tenant_id, who,
                                    data=_key_facts(row))])
        return row

    return await db.transact(revoke)


async def create_project_direct(db: Database, tenant_id: str, key: str, name: str,
                                description: str = "") -> Project:
    """Create a project without review (validated like the ``create_project`` tool)."""
    try:
        args = CreateProjectArgs(key=key, name=name, description=description)
    except ValidationError as exc:
        raise InvalidArguments(format_validation_error(exc)) from None
    async with db.write() as s:
        if await find_project(s, tenant_id, args.key) is not None:
            raise InvalidArguments(f"project {args.key} already exists")
        p = Project(tenant_id=tenant_id, key=args.key, name=args.name,
                    description=args.description)
        s.add(p)
    return p
