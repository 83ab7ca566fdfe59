"""The service graph one app instance runs on, and its background loops."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import anyio

from colaflow_mcp.auth import Authenticator, KeyVerifier, TokenIssuer, jwt_secret
from colaflow_mcp.bus import Backplane, make_backplane
from colaflow_mcp.changes import ChangeService
from colaflow_mcp.config import Settings
from colaflow_mcp.db import Database
from colaflow_mcp.models import utcnow
from colaflow_mcp.notify import Notifier

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    keys: KeyVerifier
    tokens: TokenIssuer
    auth: Authenticator
    bus: Backplane
    notifier: Notifier
    changes: ChangeService
    loops_alive: dict[str, bool] = field(default_factory=dict)

    @classmethod
    async def create(cls, settings: Settings) -> Services:
        """Open the database (creating/upgrading the schema) and wire everything."""
        db = Database(settings.database_url)
        await db.create_schema()
        secret = await jwt_secret(db, settings.jwt_secret)
        keys = KeyVerifier(db, cache_seconds=settings.api_key_cache_seconds)
        tokens = TokenIssuer(secret, settings.reviewer_token_ttl_seconds)
        bus = make_backplane(settings.redis_url, settings.bus_reconnect_max_backoff_seconds,
                             settings.redis_channel)
        notifier = Notifier(db, bus)
        changes = ChangeService(db, notifier, settings)
        return cls(settings, db, keys, tokens, Authenticator(keys, tokens), bus, notifier,
                   changes)

    async def aclose(self) -> None:
        closer = getattr(self.bus, "aclose", None)
        if closer is not None:
            await closer()
        await self.db.dispose()

    async def run_background(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the bus listener, expiry, announce sweep and reconcile loops."""
        tg.start_soon(self._guard, "backplane", self._run_bus)
        tg.start_soon(self._guard, "publisher", self.notifier.run_publisher)
        tg.start_soon(self._guard, "expiry", self._expiry_loop)
        tg.start_soon(self._guard, "announce-sweep", self._sweep_loop)
        tg.start_soon(self._guard, "reconcile", self._reconcile_loop)

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop forever: log, back off and restart on any error, never die silently."""
        backoff = 0.1
        while True:
            self.loops_alive[name] = True
            try:
                await loop()
            except anyio.get_cancelled_exc_class():
                self.loops_alive[name] = False
                raise
            except Exception:
                logger.exception("background loop %s failed; restarting in %.1fs", name, backoff)
            self.loops_alive[name] = False
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _run_bus(self) -> None:
        await self.bus.run(self.notifier.dispatch, self._on_bus_connected)

    async def _on_bus_connected(self) -> None:
        # Whatever was published while we were not listening is recovered from the rows.
        await self.notifier.reconcile()

    async def _expiry_loop(self) -> None:
        max_wait = self.settings.expiry_max_wait_seconds
        while True:
            await self.changes.expire_due()
            wake = self.changes.deadline_changed
            deadline = await self.changes.next_deadline()
            wait = max_wait
            if deadline is not None:
                wait = min(max_wait, max(0.0, (deadline - utcnow()).total_seconds()) + 0.005)
            with anyio.move_on_after(wait):
                await wake.wait()

    async def _sweep_loop(self) -> None:
        while True:
            await self.notifier.sweep_unannounced(self.settings.announce_grace_seconds)
            await anyio.sleep(self.settings.announce_sweep_interval_seconds)

    async def _reconcile_loop(self) -> None:
        while True:
            await anyio.sleep(self.settings.reconcile_interval_seconds)
            await self.notifier.reconcile()


__all__ = ["Services", "timedelta"]
