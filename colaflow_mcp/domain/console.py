"""Reviewer console sign-in: one-time login links and browser sessions.

``colaflow-mcp login-link`` makes a link (:meth:`ConsoleAuth.create_link`); the one request
that opens it consumes it and starts a session (:meth:`ConsoleAuth.open_link`). Only
SHA-256 digests of the link token and of the session id are stored, so a copy of the
database signs nobody in. Consuming is one conditional ``UPDATE … WHERE used_at IS NULL``:
two requests with the same link cannot both win.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select

from colaflow_mcp.domain.auth import Principal, valid_user
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import ConsoleSession, LoginLink, Tenant, utcnow

MAX_LINK_MINUTES = 24 * 60.0


class LinkRefused(Exception):
    """The login link is unknown, already used or expired (the page says which it may be)."""


@dataclass(frozen=True)
class Session:
    """A signed-in reviewer: who, in which tenant, and the session's CSRF token."""

    principal: Principal
    csrf_token: str


@dataclass(frozen=True)
class Opened:
    """A session just started: the cookie value (secret, never stored) and the session."""

    cookie: str
    session: Session


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ConsoleAuth:
    """Login links and sessions of the reviewer console."""

    def __init__(self, db: Database, session_ttl_seconds: float) -> None:
        self.db = db
        self.session_ttl_seconds = session_ttl_seconds

    async def create_link(self, tenant: Tenant, user: str, ttl_minutes: float) -> str:
        """Store a new one-time link for ``user`` in ``tenant``; its token (shown once)."""
        user = valid_user(user)
        if not 0 < ttl_minutes <= MAX_LINK_MINUTES:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_LINK_MINUTES:.0f} "
                             "minutes")
        token = secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.write() as s:
            s.add(LoginLink(token_hash=_digest(token), tenant_id=tenant.id, user=user,
                            created_at=now, expires_at=now + timedelta(minutes=ttl_minutes)))
        return token

    async def open_link(self, token: str) -> Opened:
        """Consume the link (once) and start a session; LinkRefused if it does not hold."""
        if not token or len(token) > 200:
            raise LinkRefused()
        now = utcnow()
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with self.db.write() as s:
            row = (await s.exec(
                update(LoginLink)
                .where(col(LoginLink.token_hash) == _digest(token))
                .where(col(LoginLink.used_at).is_(None))
                .where(col(LoginLink.expires_at) > now)
                .values(used_at=now)
                .returning(col(LoginLink.tenant_id), col(LoginLink.user)))).first()
            if row is None:
                raise LinkRefused()
            tenant_id, user = row
            tenant = await s.get(Tenant, tenant_id)
            if tenant is None:
                raise LinkRefused()
            s.add(ConsoleSession(
                id_hash=_digest(cookie), tenant_id=tenant_id, user=user, csrf_token=csrf,
                created_at=now, expires_at=now + timedelta(seconds=self.session_ttl_seconds)))
            # What no longer works goes with each sign-in: the tables stay small.
            await s.exec(delete(LoginLink).where(col(LoginLink.expires_at) < now))
            await s.exec(delete(ConsoleSession).where(
                col(ConsoleSession.expires_at) < now))
        principal = Principal(kind="reviewer", tenant_id=tenant.id, tenant_slug=tenant.slug,
                              user=user)
        return Opened(cookie, Session(principal, csrf))

    async def session(self, cookie: str | None) -> Session | None:
        """The live session behind a cookie value, or None (unknown, ended, expired)."""
        if not cookie or len(cookie) > 200:
            return None
        async with self.db.read() as s:
            found = (await s.exec(
                select(ConsoleSession, Tenant)
                .where(ConsoleSession.id_hash == _digest(cookie))
                .where(ConsoleSession.tenant_id == Tenant.id))).first()
        if found is None:
            return None
        row, tenant = found
        if row.ended_at is not None or row.expires_at <= utcnow():
            return None
        principal = Principal(kind="reviewer", tenant_id=tenant.id, tenant_slug=tenant.slug,
                              user=row.user, token_expires=row.expires_at.timestamp())
        return Session(principal, row.csrf_token)

    async def end(self, cookie: str) -> None:
        """Log out: the session stops working at once (every tab, every stream)."""
        async with self.db.write() as s:
            await s.exec(
                update(ConsoleSession).where(col(ConsoleSession.id_hash) == _digest(cookie))
                .where(col(ConsoleSession.ended_at).is_(None)).values(ended_at=utcnow()))


__all__ = ["ConsoleAuth", "LinkRefused", "Opened", "Session", "valid_user"]
