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
    # Completed passes of the recovery loops (in /health): how an operator, or a test, sees
    # that sweeps and reconciles really run.
    loop_passes: dict[str, int] = field(default_factory=dict)
    # Set, then replaced, after every completed pass: wait on it to see passes happen.
    pass_completed: anyio.Event = field(default_factory=anyio.Event)
    _stopping: anyio.Event = field(default_factory=anyio.Event)
    _periodic_running: int = 0
    _periodic_done: anyio.Event = field(default_factory=anyio.Event)

    @classmethod
    async def create(cls, settings: Settings) -> Services:
        """Open the database (creating/upgrading the schema) and wire everything."""
        db = Database(settings.database_url)
        await db.create_schema(settings.schema_upgrade, settings.schema_lock_timeout_seconds)
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
        # Loops that write or read the database stop on their own at shutdown (see
        # stop_background); only the backplane listener is simply cancelled.
        for name, loop in (("publisher", self.notifier.run_publisher),
                           ("announce-marker", self.notifier.run_marker),
                           ("expiry", self._expiry_loop), ("announce-sweep", self._sweep_loop),
                           ("reconcile", self._reconcile_loop)):
            self._periodic_running += 1
            tg.start_soon(self._periodic, name, loop)

    async def stop_background(self, grace_seconds: float = 5.0) -> None:
        """Let the loops finish their current pass and return, before cancelling.

        The publisher publishes what is queued and the marker records it, so a clean
        shutdown leaves nothing for another instance's sweep. Cancelling a loop in the
        middle of a database call would also make SQLAlchemy terminate the aiosqlite
        connection with a close task that can hang the event loop's close.
        """
        self._stopping.set()
        self.notifier.close_outbox()
        if self._periodic_running:
            with anyio.move_on_after(grace_seconds):
                await self._periodic_done.wait()

    async def _pause(self, seconds: float, wake: anyio.Event | None = None) -> None:
        """Wait ``seconds``, or less if woken or stopping."""
        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as tg:
                async def stop_on(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on, self._stopping)
                if wake is not None:
                    tg.start_soon(stop_on, wake)

    async def _periodic(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await self._guard(name, loop)
        finally:
            self._periodic_running -= 1
            if self._periodic_running == 0:
                self._periodic_done.set()

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop forever: log, back off and restart on any error, never die silently."""
        backoff = 0.1
        while not self._stopping.is_set():
            self.loops_alive[name] = True
            try:
                await loop()
            except anyio.get_cancelled_exc_class():
                self.loops_alive[name] = False
                raise
            except Exception:
                logger.exception("background loop %s failed; restarting in %.1fs", name, backoff)
            self.loops_alive[name] = False
            await self._pause(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _run_bus(self) -> None:
        await self.bus.run(self.notifier.dispatch, self._on_bus_connected)

    async def _on_bus_connected(self) -> None:
        # Whatever was published while we were not listening is recovered from the rows.
        await self.notifier.reconcile()

    async def _expiry_loop(self) -> None:
        max_wait = self.settings.expiry_max_wait_seconds
        while not self._stopping.is_set():
            # Until the next wake-up is planned, every proposal wakes us (no gap).
            self.changes.expiry_planned_at = None
            wake = self.changes.deadline_changed
            await self.changes.expire_due()
            deadline = await self.changes.next_deadline()
            wait = max_wait
            if deadline is not None:
                wait = min(max_wait, max(0.0, (deadline - utcnow()).total_seconds()) + 0.005)
            self.changes.expiry_planned_at = utcnow() + timedelta(seconds=wait)
            await self._pause(wait, wake)

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            await self.notifier.sweep_unannounced(self.settings.announce_grace_seconds)
            self._passed("announce-sweep")
            await self._pause(self.settings.announce_sweep_interval_seconds)

    async def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self.settings.reconcile_interval_seconds)
            if not self._stopping.is_set():
                await self.notifier.reconcile()
                self._passed("reconcile")

    def _passed(self, loop: str) -> None:
        passes = self.loop_passes[loop] = self.loop_passes.get(loop, 0) + 1
        logger.debug("loop pass: %s #%d", loop, passes)
        self.pass_completed.set()
        self.pass_completed = anyio.Event()


__all__ = ["Services", "timedelta"]
