"""Who is calling: API keys for agents, JWT reviewer tokens for humans, revocation.

Every edge finds the credential with :func:`credential_from` and turns it into a
:class:`Principal` with :class:`Authenticator`; the revocation pass asks
:meth:`KeyVerifier.unusable` which of the live connections' keys no longer hold.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import jwt
from sqlalchemy import update
from sqlmodel import col, select

from colaflow_mcp.store.batching import Coalescer
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import ApiKey, Tenant, utcnow

KEY_PREFIX = "cola_"
_LOOKUP_CHARS = 12  # random characters after "cola_" kept in clear as the lookup prefix
_LAST_USED_RESOLUTION = timedelta(seconds=60)
JWT_ALGORITHM = "HS256"
JWT_AUDIENCE = "colaflow-reviewer"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agent (API key) or a reviewer (JWT), always inside one tenant."""

    kind: Literal["agent", "reviewer"]
    tenant_id: str
    tenant_slug: str
    api_key_id: str | None = None
    user: str | None = None
    # The agent key's name (given at ``keys create``), shown to reviewers as the proposer.
    key_name: str | None = None
    # A reviewer token's ``exp`` (Unix time): connections that outlive it are closed.
    token_expires: float | None = None

    @property
    def display(self) -> str:
        """A name for decisions and logs (never a secret)."""
        if self.kind == "reviewer":
            return self.user or "reviewer"
        return f"api-key:{self.api_key_id}"


def hash_key(key: str) -> str:
    """SHA-256 of the whole key: keys carry 256 bits of entropy, so no slow KDF is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_lookup_prefix(key: str) -> str | None:
    """The stored lookup prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + _LOOKUP_CHARS + 16:
        return None
    if len(key) > 200:
        return None
    return key[: len(KEY_PREFIX) + _LOOKUP_CHARS]


def generate_key() -> str:
    """A new key: ``cola_`` and 43 URL-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyVerifier:
    """Verifies API keys with one indexed lookup, cached briefly so hot paths stay cheap."""

    def __init__(self, db: Database, cache_seconds: float = 2.0,
                 cache_entries: int = 10_000) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.cache_entries = cache_entries
        self._cache: dict[str, tuple[float, Principal | None, datetime | None]] = {}
        self._keys: Coalescer[str, tuple[ApiKey, Tenant]] = Coalescer(self._read_keys)

    async def verify(self, key: str) -> Principal | None:
        """The agent principal for a valid, unrevoked, unexpired key; else None."""
        prefix = key_lookup_prefix(key)
        if prefix is None:
            return None
        digest = hash_key(key)
        now_mono = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now_mono - cached[0] < self.cache_seconds:
            principal, expires_at = cached[1], cached[2]
            if principal is not None and expires_at is not None and expires_at <= utcnow():
                return None
            return principal
        principal, expires_at = await self._lookup(prefix, digest)
        if len(self._cache) > self.cache_entries:
            self._cache.clear()
        self._cache[digest] = (now_mono, principal, expires_at)
        return principal

    async def unusable(self, key_ids: Iterable[str], chunk: int = 500) -> set[str]:
        """Which of these keys are revoked, expired or deleted (for revocation).

        One query per ``chunk`` distinct keys, however many connections share them.
        """
        ids = list(dict.fromkeys(key_ids))
        usable: set[str] = set()
        now = utcnow()
        for i in range(0, len(ids), chunk):
            async with self.db.read() as s:
                rows = (await s.exec(
                    select(ApiKey.id, ApiKey.revoked_at, ApiKey.expires_at)
                    .where(col(ApiKey.id).in_(ids[i:i + chunk])))).all()
            usable.update(key_id for key_id, revoked_at, expires_at in rows
                          if revoked_at is None and (expires_at is None or expires_at > now))
        return set(ids) - usable

    async def _read_keys(self, prefixes: list[str]) -> dict[str, tuple[ApiKey, Tenant]]:
        async with self.db.read() as s:
            found = (
                await s.exec(
                    select(ApiKey, Tenant)
                    .where(col(ApiKey.prefix).in_(prefixes))
                    .where(ApiKey.tenant_id == Tenant.id)
                )
            ).all()
        return {row.prefix: (row, tenant) for row, tenant in found}

    async def _lookup(self, prefix: str, digest: str) -> tuple[Principal | None, datetime | None]:
        # Concurrent lookups (a reconnect storm; every request when the cache entry has
        # just expired) share one query.
        found = await self._keys.get(prefix)
        if found is None:
            return None, None
        row, tenant = found
        if not hmac.compare_digest(row.key_hash, digest) or not _usable(row):
            return None, None
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
            row.last_used_at = now  # the row is shared with concurrent lookups: one write
            async with self.db.write() as s:
                await s.exec(
                    update(ApiKey).where(col(ApiKey.id) == row.id).values(last_used_at=now)
                )
        principal = Principal(
            kind="agent", tenant_id=tenant.id, tenant_slug=tenant.slug, api_key_id=row.id,
            key_name=row.name or None,
        )
        return principal, row.expires_at


def _usable(row: ApiKey) -> bool:
    if row.revoked_at is not None:
        return False
    return row.expires_at is None or row.expires_at > utcnow()


MAX_USER = 200


def valid_user(user: str) -> str:
    """A reviewer name: 1-200 printable characters, stripped (ValueError otherwise). Every
    way a reviewer is named (tokens, console links) takes it: an empty name would decide
    as the anonymous "reviewer", a newline would break the lines that show it."""
    user = user.strip()
    if not user or len(user) > MAX_USER or not user.isprintable():
        raise ValueError(f"user must be 1-{MAX_USER} printable characters")
    return user


class TokenIssuer:
    """Signs and checks reviewer JWTs (claims: sub = user, tenant slug and id, role)."""

    def __init__(self, secret: str, ttl_seconds: float, cache_entries: int = 10_000,
                 previous: Sequence[str] = ()) -> None:
        self.secret = secret
        # Earlier secrets: their tokens are still accepted (rotation); never used to sign.
        self.keys = (secret, *(p for p in previous if p and p != secret))
        self.ttl_seconds = ttl_seconds
        self.cache_entries = cache_entries
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(self, tenant: Tenant, user: str, ttl_seconds: float | None = None) -> str:
        """A signed reviewer token for ``user`` in ``tenant`` (named as ``valid_user``)."""
        user = valid_user(user)
        now = int(time.time())
        claims = {
            "sub": user,
            "tenant": tenant.slug,
            "tid": tenant.id,
            "role": "reviewer",
            "aud": JWT_AUDIENCE,
            "iat": now,
            "exp": now + int(ttl_seconds or self.ttl_seconds),
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> Principal | None:
        """The reviewer behind a valid token; verified tokens are cached until they expire."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, exp = cached
            if time.time() < exp:
                return principal
            del self._verified[token]
        claims = None
        for secret in self.keys:
            try:
                claims = jwt.decode(
                    token, secret, algorithms=[JWT_ALGORITHM], audience=JWT_AUDIENCE,
                    options={"require": ["sub", "tid", "tenant", "exp"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue  # perhaps signed with an earlier secret
            except jwt.PyJWTError:
                return None
        if claims is None:
            return None
        if claims.get("role") != "reviewer":
            return None
        principal = Principal(
            kind="reviewer", tenant_id=str(claims["tid"]), tenant_slug=str(claims["tenant"]),
            user=str(claims["sub"]), token_expires=float(claims["exp"]),
        )
        if len(self._verified) >= self.cache_entries:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal


async def jwt_secret(db: Database, configured: str | None) -> str:
    """The configured secret, or one generated once and kept with the database."""
    if configured:
        return configured
    return await db.meta_get_or_create("jwt_secret")


class Authenticator:
    """Turns a bearer credential (API key or reviewer JWT) into a principal."""

    def __init__(self, keys: KeyVerifier, tokens: TokenIssuer) -> None:
        self.keys = keys
        self.tokens = tokens

    async def authenticate(self, credential: str | None) -> Principal | None:
        """The principal behind a credential, or None (missing, malformed, invalid)."""
        if not credential:
            return None
        credential = credential.strip()
        if credential.startswith(KEY_PREFIX):
            return await self.keys.verify(credential)
        if credential.count(".") == 2 and len(credential) < 4096:
            return self.tokens.verify(credential)
        return None


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()



def credential_from(headers: Mapping[str, str], query: Mapping[str, str] | None = None
                    ) -> str | None:
    """The credential a request presents: ``Authorization: Bearer …`` (an API key or a
    reviewer token), else ``X-API-Key`` (API keys only: a reviewer token there is no
    credential), else (only where the edge passes ``query``: browsers cannot set headers on
    WebSocket or EventSource) the ``access_token`` query parameter.

    The one place every edge (REST, MCP, hub) reads credentials from.
    """
    credential = bearer(headers.get("authorization"))
    if not credential:
        key = (headers.get("x-api-key") or "").strip()
        credential = key if key.startswith(KEY_PREFIX) else None
    if not credential and query is not None:
        credential = query.get("access_token")
    return credential or None


__all__ = [
    "KEY_PREFIX", "Authenticator", "KeyVerifier", "Principal", "TokenIssuer", "bearer",
    "credential_from", "generate_key", "hash_key", "jwt_secret", "key_lookup_prefix",
]
