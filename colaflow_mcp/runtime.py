"""The object graph of one instance, and the one supervisor that runs its background work.

``Runtime.create`` opens the database (creating or upgrading the schema) and wires store →
domain → delivery → edges. ``Runtime.running`` starts the supervisor, whose loops are
declared in :meth:`Runtime._declare_work` (the bodies of the periodic ones are here: they
say *when*; the components say *what*), and on exit stops everything in order: the hub
tells its clients to reconnect elsewhere, the supervisor stops its loops (see
``supervisor``), then the backplane and the database close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import anyio

from colaflow_mcp import metrics
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.backplane import Backplane, make_backplane
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.delivery.outbox import Outbox
from colaflow_mcp.delivery.recovery import Recovery
from colaflow_mcp.delivery.webhooks import WebhookSender
from colaflow_mcp.domain import audit as audit_trail
from colaflow_mcp.domain.audit import AuditLog
from colaflow_mcp.domain.auth import Authenticator, KeyVerifier, TokenIssuer, jwt_secret
from colaflow_mcp.domain.changes import ChangeService
from colaflow_mcp.domain.console import ConsoleAuth
from colaflow_mcp.domain.operations import OPERATIONS
from colaflow_mcp.domain.queries import Queries
from colaflow_mcp.domain.webhooks import WebhookRecorder
from colaflow_mcp.hub.server import HubServer
from colaflow_mcp.mcp.endpoint import McpEndpoint
from colaflow_mcp.rest.routes import RestApi
from colaflow_mcp.store.engine import Database
from colaflow_mcp.supervisor import Supervisor
from colaflow_mcp.web.console import Console

logger = logging.getLogger(__name__)


class KeyHolder(Protocol):
    """An edge with long-lived connections that must end when their key is revoked."""

    def live_key_ids(self) -> set[str]: ...

    async def drop_revoked(self, revoked: set[str], now_unix: float) -> int: ...


@dataclass
class Runtime:
    """Everything one app instance runs on."""

    settings: Settings
    db: Database
    keys: KeyVerifier
    tokens: TokenIssuer
    auth: Authenticator
    bus: Backplane
    notifier: Notifier
    outbox: Outbox
    recovery: Recovery
    changes: ChangeService
    queries: Queries
    audit: AuditLog
    hub: HubServer
    mcp: McpEndpoint
    supervisor: Supervisor
    webhooks: WebhookSender
    console: Console

    @classmethod
    async def create(cls, settings: Settings) -> Runtime:
        """Open the database (creating/upgrading the schema) and wire everything."""
        s = settings
        db = Database(s.database_url, s.db_pool_size)
        await db.create_schema(s.schema_upgrade, s.schema_lock_timeout_seconds)
        keys = KeyVerifier(db, cache_seconds=s.api_key_cache_seconds,
                           cache_entries=s.auth_cache_entries)
        tokens = TokenIssuer(await jwt_secret(db, s.jwt_secret), s.reviewer_token_ttl_seconds,
                             cache_entries=s.auth_cache_entries,
                             previous=s.jwt_previous_secrets)
        auth = Authenticator(keys, tokens)
        bus = make_backplane(s)
        notifier = Notifier(db, s.db_call_seconds, s.review_queue_size,
                            s.review_queue_recent_decisions)
        outbox = Outbox(db, notifier, bus, s.outbox_size, s.announce_marker_linger_seconds)
        webhooks = WebhookSender(db, s)
        # Deliveries are queued in each proposal's and decision's own transaction; the
        # commit rings the sender. (The audit trail last: it holds its tenant's lock.)
        queue = WebhookRecorder(s.webhook_schedule()[0], webhooks.nudge)
        changes = ChangeService(db, outbox, s, recorders=(queue, audit_trail.record))
        queries = Queries(db)
        runtime = cls(
            s, db, keys, tokens, auth, bus, notifier, outbox, Recovery(db, notifier, bus),
            changes, queries, AuditLog(db), HubServer(s, auth, notifier),
            McpEndpoint(s, auth, changes, queries, notifier),
            Supervisor(max_backoff=s.loop_max_backoff_seconds,
                       stop_grace=s.shutdown_grace_seconds),
            webhooks,
            Console(s, ConsoleAuth(db, s.console_session_ttl_seconds), changes, queries,
                    AuditLog(db), notifier),
        )
        runtime._declare_work()
        metrics.known_tools(OPERATIONS)
        return runtime

    @property
    def rest(self) -> RestApi:
        """What the REST handlers use."""
        return RestApi(self.settings, self.auth, self.changes, self.queries, self.audit)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every loop and service; on exit stop them in order and close."""
        try:
            async with self.supervisor.running():
                try:
                    yield
                finally:
                    # Tell hub clients to reconnect (elsewhere) before we go.
                    with anyio.CancelScope(shield=True), \
                            anyio.move_on_after(self.settings.hub_shutdown_seconds):
                        await self.console.shutdown()
                        await self.hub.shutdown()
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        """Close the backplane and the database (after the loops stopped)."""
        await self.bus.aclose()
        await self.db.dispose()

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """``/health/ready``: (ready, body naming every check and the failing ones).

        Ready: started and not shutting down, the database answers within
        ``readiness_timeout_seconds``, every supervised loop and service is alive, and the
        Redis backplane (when configured) is connected.
        """
        # Not running once shutdown begins (the hub closes first, while still listening).
        checks: dict[str, bool] = {
            "running": self.supervisor.running_now and not self.hub.closing}
        db_ok = False
        with anyio.move_on_after(self.settings.readiness_timeout_seconds):
            db_ok = await self.db.ping(quiet=True)
        checks["database"] = db_ok
        if self.settings.redis_url:
            checks["backplane"] = self.bus.healthy
        checks.update((f"loop:{name}", alive) for name, alive in self.supervisor.alive.items())
        failing = [name for name, ok in checks.items() if not ok]
        return not failing, {"status": "not ready" if failing else "ready",
                             "failing": failing, "checks": checks}

    def live(self) -> metrics.Live:
        """What the gauges of ``/metrics`` show, read now."""
        return metrics.Live(hub_connections=self.hub.transport_counts(),
                            mcp_sessions=self.mcp.session_counts(),
                            backplane_connected=self.bus.healthy)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """``/health``: (database answers, body)."""
        db_ok = await self.db.ping()
        work = self.supervisor.status()
        ok = db_ok and self.bus.healthy and all(work["loops"].values())
        return db_ok, {
            "status": "ok" if ok else "degraded",
            "database": "ok" if db_ok else "unreachable",
            "backplane": self.bus.status(),
            **work,
            "instance": self.settings.instance_id,
            "subscribers": self.notifier.subscriber_count(),
            "reviewQueues": self.notifier.queue_subscriber_count(),
            "hub": self.hub.status(),
            "mcp": self.mcp.status(),
            "webhooks": self.webhooks.status(),
        }

    # -- the background work --------------------------------------------------------------

    def _declare_work(self) -> None:
        s, sv = self.settings, self.supervisor
        sv.service("mcp-sessions", lambda: self.mcp.serving(sv.spawn))
        # Cancelled at stop: they hold no transaction.
        sv.loop("backplane", self._listen, finish=False)
        sv.loop("hub-timers", self.hub.run_timers, finish=False)
        # Return by themselves at stop: the outbox closes, the periodic ones see stopping.
        sv.on_stop(self.outbox.close)
        sv.loop("publisher", lambda: self.outbox.run_publisher(s.publish_batch_size))
        sv.loop("announce-marker", lambda: self.outbox.run_marker(s.marker_batch_size))
        sv.loop("expiry", self._expire)
        sv.loop("announce-sweep", self._sweep)
        sv.loop("reconcile", self._reconcile)
        sv.loop("revocation", self._revoke)
        sv.loop("webhooks", lambda: self.webhooks.run(sv.stopping, sv.pause))

    async def _listen(self) -> None:
        # Whatever was published while we were not listening is recovered from the rows.
        await self.bus.run(self.notifier.dispatch, self._reconcile_once,
                           self.notifier.wants)

    async def _reconcile_once(self, missed_since: datetime | None = None) -> None:
        await self.recovery.reconcile(self.settings.recovery_batch_size)
        await self.recovery.reconcile_queues(self.settings.recovery_batch_size, missed_since)

    async def _expire(self) -> None:
        s, sv = self.settings, self.supervisor
        while not sv.stopping.is_set():
            wait, wake = await self.changes.expiry_pass(s.expiry_max_wait_seconds,
                                                        s.recovery_batch_size)
            await sv.pause(wait, wake)

    async def _sweep(self) -> None:
        s, sv = self.settings, self.supervisor
        while not sv.stopping.is_set():
            await self.recovery.sweep_unannounced(s.announce_grace_seconds,
                                                  s.recovery_batch_size)
            sv.passed("announce-sweep")
            await sv.pause(s.announce_sweep_interval_seconds)

    async def _reconcile(self) -> None:
        sv = self.supervisor
        while not sv.stopping.is_set():
            await sv.pause(self.settings.reconcile_interval_seconds)
            if not sv.stopping.is_set():
                await self._reconcile_once()
                sv.passed("reconcile")

    async def _revoke(self) -> None:
        sv = self.supervisor
        while not sv.stopping.is_set():
            await sv.pause(self.settings.revocation_check_interval_seconds)
            if not sv.stopping.is_set():
                await self.revocation_pass()

    async def revocation_pass(self) -> int:
        """One pass for every edge alike: which live keys no longer hold (one query per
        batch of distinct keys), then each edge closes what used them."""
        holders: list[KeyHolder] = [self.hub, self.mcp]
        key_ids = set().union(*(h.live_key_ids() for h in holders))
        revoked = (await self.keys.unusable(key_ids, self.settings.recovery_batch_size)
                   if key_ids else set())
        now = time.time()
        return sum([await h.drop_revoked(revoked, now) for h in holders])


__all__ = ["Runtime"]
