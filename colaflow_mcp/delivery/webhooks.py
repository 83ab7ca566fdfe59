"""The webhook sender: the supervisor's ``webhooks`` loop, sending what the outbox holds.

Each pass claims due deliveries in one statement (``store/statements.py:
CLAIM_WEBHOOK_DELIVERIES``; PostgreSQL skips rows another instance is claiming, ``FOR
UPDATE SKIP LOCKED``) with a lease longer than an attempt can take, so two instances never
send one delivery at once; a lease that runs out (its instance died mid-attempt) makes the
delivery claimable again, under the same ``webhook-id``. Each attempt is signed, sent
(``delivery/webhook_http.py``) with a bound on its whole duration, and recorded (status
code, latency, error) with the delivery's next state in one transaction: succeeded on a
2xx, else pending until the next delay of the retry schedule, failed after the last.

One endpoint cannot slow the others: each has at most ``webhook_endpoint_concurrency``
requests in flight here, claims skip endpoints that are full or backing off, and after a
failure an endpoint gets nothing for a while (doubling, reset by a success), what it was
holding going back to the table. Decisions never wait for any of this: they only insert
rows, and ring :meth:`WebhookSender.nudge` after commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.abc
from sqlmodel import Session

from colaflow_mcp import metrics
from colaflow_mcp.config import Settings
from colaflow_mcp.delivery import webhook_http
from colaflow_mcp.domain.netguard import Resolver, UnsafeAddress, system_resolver
from colaflow_mcp.domain.webhooks import origin_of
from colaflow_mcp.store import statements
from colaflow_mcp.store.engine import Database
from colaflow_mcp.store.tables import utcnow

logger = logging.getLogger(__name__)

Pause = Callable[[float, anyio.Event], Awaitable[None]]
_METRIC: dict[str, metrics.WebhookResult] = {
    "succeeded": "success", "retrying": "retry", "failed": "failure"}
_RENEW_AFTER = 1.0  # seconds a claim may wait here before its lease is renewed


@dataclass
class Claimed:
    """A delivery this instance claimed: what one attempt needs."""

    id: str
    endpoint_id: str
    event_type: str
    body: str
    attempt: int
    url: str
    secret: str
    claimed_at: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """How an attempt went: status code (None: no response), latency, error."""

    status_code: int | None
    latency_ms: float
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Endpoint:
    in_flight: int = 0
    waiting: deque[Claimed] = field(default_factory=deque)
    failures: int = 0  # in a row
    cool_until: float = 0.0  # monotonic: no attempt before


class WebhookSender:
    """Claims, sends and records webhook deliveries (see the module docstring)."""

    def __init__(self, db: Database, settings: Settings,
                 resolve: Resolver = system_resolver) -> None:
        self.db = db
        self.settings = settings
        self.schedule = settings.webhook_schedule()
        self.resolve = resolve
        self.me = settings.instance_id[:64]
        self.results: dict[str, int] = {"succeeded": 0, "retrying": 0, "failed": 0}
        # Set, then replaced, after every recorded attempt (tests and benchmarks wait on it).
        self.attempt_recorded = anyio.Event()
        self._wake = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._in_flight = 0
        self._held = 0  # claimed and not yet finished (waiting or in flight)
        self._tg: anyio.abc.TaskGroup | None = None
        self._http: webhook_http.GuardedClient | None = None
        # Finished attempts not yet written: (the delivery's update, the attempt's row,
        # the result), written together by one transaction (``_flush``).
        self._records: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        self._records_ready = anyio.Event()
        self._next_retry: datetime | None = None  # the earliest retry this instance planned

    def status(self) -> dict[str, Any]:
        """For ``/health``: attempts in flight and held here, and results since start."""
        return {"inFlight": self._in_flight, "held": self._held, **self.results}

    async def _resolve(self, host: str, port: int) -> Sequence[str]:
        return await self.resolve(host, port)

    # -- the doorbell ---------------------------------------------------------------------

    def nudge(self) -> None:
        """Deliveries were committed: look now. Safe from any thread (a commit on SQLite
        happens on a worker thread)."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stopping: anyio.Event, pause: Pause) -> None:
        """Claim and send until ``stopping``; then give back what is held unsent."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        s = self.settings
        http = webhook_http.GuardedClient(s.webhook_allow_private_networks,
                                          s.webhook_timeout_seconds,
                                          s.webhook_endpoint_concurrency, self._resolve)
        try:
            async with http, anyio.create_task_group() as tg:
                self._http, self._tg = http, tg
                tg.start_soon(self._write_records)
                try:
                    last_claim = 0.0
                    while not stopping.is_set():
                        # Commits ring often under load: one claim takes what gathered.
                        gap = last_claim + s.webhook_batch_linger_seconds - time.monotonic()
                        if gap > 0:
                            await anyio.sleep(gap)
                        last_claim = time.monotonic()
                        wake = self._wake = anyio.Event()
                        if await self._claim_and_start():
                            continue  # a full batch: more may be due
                        await pause(await self._idle_seconds(), wake)
                finally:
                    self._tg = None  # nothing more starts; what waits is given back below
                    tg.cancel_scope.cancel()  # in-flight attempts give their rows back
        finally:
            self._http = self._tg = None
            with anyio.CancelScope(shield=True):
                await self._flush()
            await self._release_waiting()

    async def _claim_and_start(self) -> bool:
        """One claim; True if it filled its batch (look again at once)."""
        s = self.settings
        room = min(s.webhook_batch_size, s.webhook_max_in_flight * 2 - self._held)
        if room <= 0:
            return False
        busy = self._busy()
        dialect = "sqlite" if self.db.is_sqlite else "postgresql"
        expired = statements.CLAIM_WEBHOOK_DELIVERIES[(dialect, True, bool(busy))]
        due = statements.CLAIM_WEBHOOK_DELIVERIES[(dialect, False, bool(busy))]
        now = utcnow()
        params: dict[str, Any] = {"p_now": now, "p_limit": room, "p_me": self.me,
                                  "p_lease": now + timedelta(seconds=s.webhook_lease_seconds)}
        if busy:
            params["p_busy"] = busy

        def claim(session: Session) -> list[Claimed]:
            conn = session.connection()
            rows = list(conn.execute(expired, params).all())  # few: orphaned by a crash
            if len(rows) < room:
                rows += conn.execute(due, {**params, "p_limit": room - len(rows)}).all()
            return [Claimed(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]),
                            str(r[6]), str(r[7])) for r in rows]

        claimed = await self.db.transact(claim)
        for c in claimed:
            self._held += 1
            self._endpoints.setdefault(c.endpoint_id, _Endpoint()).waiting.append(c)
        self._start_ready()
        return len(claimed) >= room

    def _busy(self) -> list[str]:
        """Endpoints that get no claim now: backing off, or holding all they may."""
        now_m, most = time.monotonic(), self.settings.webhook_endpoint_concurrency
        return [ep for ep, st in self._endpoints.items()
                if st.cool_until > now_m or st.in_flight + len(st.waiting) >= most]

    async def _idle_seconds(self) -> float:
        """How long to wait for a doorbell: until the next retry or the end of a backoff
        this instance knows of, at most the poll interval."""
        wait = self.settings.webhook_poll_interval_seconds
        now_m = time.monotonic()
        for st in self._endpoints.values():
            if st.cool_until > now_m:
                wait = min(wait, st.cool_until - now_m)
        due = self._next_retry
        if self._held == 0:
            # Idle: ask the table (retries planned by other instances, or before a restart).
            # While attempts are in flight, their ends wake the loop and their retries are
            # known here: no query per pass under load.
            busy = self._busy()
            async with self.db.read() as session:
                conn = await session.connection()
                due = (await conn.execute(statements.NEXT_WEBHOOK_DUE[bool(busy)],
                                          {"p_busy": busy} if busy else {})).scalar()
        elif due is not None and due <= utcnow():
            self._next_retry = None  # its claim comes with this pass or the next
        if due is not None:
            if due.tzinfo is None:  # SQLite keeps no offset: the column is UTC
                due = due.replace(tzinfo=UTC)
            # Due already (it fell due after the claim): look again at once.
            wait = min(wait, (due - utcnow()).total_seconds())
        return max(wait, 0.0)

    def _start_ready(self) -> None:
        """Start every waiting attempt that has room (globally and at its endpoint)."""
        s, tg = self.settings, self._tg
        if tg is None:
            return
        now_m = time.monotonic()
        for st in self._endpoints.values():
            while (st.waiting and st.cool_until <= now_m
                   and st.in_flight < s.webhook_endpoint_concurrency
                   and self._in_flight < s.webhook_max_in_flight):
                c = st.waiting.popleft()
                st.in_flight += 1
                self._in_flight += 1
                tg.start_soon(self._attempt, c)
        idle = [ep for ep, st in self._endpoints.items()
                if not st.in_flight and not st.waiting and not st.failures]
        for ep in idle:  # forget endpoints with nothing going on
            del self._endpoints[ep]

    # -- one attempt ----------------------------------------------------------------------

    async def _attempt(self, c: Claimed) -> None:
        st = self._endpoints.setdefault(c.endpoint_id, _Endpoint())
        try:
            if time.monotonic() - c.claimed_at > _RENEW_AFTER and not await self._renew(c):
                return  # the lease ran out while it waited: another instance has it
            outcome = await self.post(c)
            with anyio.CancelScope(shield=True):
                await self._finish(c, outcome, st)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._release(c, utcnow())
            raise
        except Exception:  # the database failed: the lease runs out, it is sent again
            logger.exception("webhook delivery %s: recording the attempt failed", c.id)
        finally:
            s = self.settings
            # Claims skipped this endpoint (or all) while it was full: look again now.
            full = (st.in_flight >= s.webhook_endpoint_concurrency
                    or self._in_flight >= s.webhook_max_in_flight
                    or self._held >= s.webhook_max_in_flight * 2)
            st.in_flight -= 1
            self._in_flight -= 1
            self._held -= 1
            self._start_ready()
            if full:
                self._wake.set()

    async def post(self, c: Claimed) -> Outcome:
        """Sign and send one attempt, bounded by the timeout as a whole."""
        assert self._http is not None
        timeout = self.settings.webhook_timeout_seconds
        body = c.body.encode()
        headers = webhook_http.signed_headers(c.secret, c.id, int(time.time()), body)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            with anyio.fail_after(timeout):
                status = await self._http.post(c.endpoint_id, c.url, body, headers)
            if not 200 <= status < 300:
                error = (f"HTTP {status} (redirects are not followed)"
                         if 300 <= status < 400 else f"HTTP {status}")
        except TimeoutError:
            error = f"no response within {timeout:g}s"
        except UnsafeAddress as exc:
            error = f"refused: {exc}"
        except Exception as exc:  # connection refused or reset, TLS, DNS, …: a failure
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency = (time.perf_counter() - started) * 1000
        if error is not None:
            # The path or query may hold a secret token: never write the whole URL.
            error = error.replace(c.url, origin_of(c.url))[:500]
        return Outcome(status, latency, error)

    async def _finish(self, c: Claimed, outcome: Outcome, st: _Endpoint) -> None:
        """Queue the attempt's record and the delivery's next state for ``_flush``; after a
        failure, the endpoint backs off."""
        now = utcnow()
        if outcome.ok:
            state, due, result = "succeeded", None, "succeeded"
        elif c.attempt < len(self.schedule):
            state, result = "pending", "retrying"
            due = now + timedelta(seconds=self.schedule[c.attempt])
            if self._next_retry is None or due < self._next_retry:
                self._next_retry = due
        else:
            state, due, result = "failed", None, "failed"
        params = {"p_id": c.id, "p_me": self.me, "p_attempt": c.attempt, "p_state": state,
                  "p_next": due, "p_finished": None if state == "pending" else now}
        attempt = {"delivery_id": c.id, "attempt": c.attempt, "at": now,
                   "status_code": outcome.status_code, "latency_ms": outcome.latency_ms,
                   "error": outcome.error}
        # Until written, the claim's lease keeps the delivery this instance's.
        self._records.append((params, attempt, result))
        self._records_ready.set()
        if outcome.ok:
            st.failures = 0
            return
        logger.info("webhook %s to %s: attempt %d failed: %s", c.id, origin_of(c.url),
                    c.attempt, outcome.error)
        s = self.settings
        st.failures += 1
        backoff = min(s.webhook_endpoint_backoff_seconds * 2 ** (st.failures - 1),
                      s.webhook_endpoint_max_backoff_seconds)
        st.cool_until = time.monotonic() + backoff
        await self._give_back(st, now + timedelta(seconds=backoff))

    async def _write_records(self) -> None:
        """Write finished attempts as they come, all that gathered in one transaction."""
        while True:
            await self._records_ready.wait()
            await anyio.sleep(self.settings.webhook_batch_linger_seconds)
            self._records_ready = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self._flush()

    async def _flush(self) -> None:
        batch, self._records = self._records, []
        if not batch:
            return

        def record(session: Session) -> None:
            conn = session.connection()
            conn.execute(statements.FINISH_WEBHOOK_ATTEMPT, [b[0] for b in batch])
            conn.execute(statements.INSERT_WEBHOOK_ATTEMPT, [b[1] for b in batch])

        try:
            await self.db.transact(record)
        except Exception:  # their leases run out: the deliveries are sent again
            logger.exception("recording %d webhook attempts failed", len(batch))
            return
        for _, _, result in batch:
            self.results[result] += 1
            metrics.webhook_delivery(_METRIC[result])
        if any(result == "retrying" for _, _, result in batch):
            self._wake.set()  # a retry's due time is in the table now
        self.attempt_recorded.set()
        self.attempt_recorded = anyio.Event()

    async def _give_back(self, st: _Endpoint, due: datetime) -> None:
        """An endpoint backs off: what waits for it goes back to the table until then."""
        while st.waiting:
            c = st.waiting.popleft()
            self._held -= 1
            await self._release(c, due)

    async def _renew(self, c: Claimed) -> bool:
        lease = utcnow() + timedelta(seconds=self.settings.webhook_lease_seconds)
        params = {"p_id": c.id, "p_me": self.me, "p_attempt": c.attempt, "p_lease": lease}

        def renew(session: Session) -> bool:
            result = session.connection().execute(statements.RENEW_WEBHOOK_LEASE, params)
            return bool(result.rowcount)

        return await self.db.transact(renew)

    async def _release(self, c: Claimed, due: datetime) -> None:
        params = {"p_id": c.id, "p_me": self.me, "p_attempt": c.attempt, "p_now": due}

        def release(session: Session) -> None:
            session.connection().execute(statements.RELEASE_WEBHOOK_DELIVERY, params)

        try:
            await self.db.transact(release)
        except Exception:  # its lease runs out instead
            logger.exception("could not give back webhook delivery %s", c.id)

    async def _release_waiting(self) -> None:
        with anyio.CancelScope(shield=True):
            now = utcnow()
            for st in self._endpoints.values():
                await self._give_back(st, now)
            self._endpoints.clear()


__all__ = ["Claimed", "Outcome", "WebhookSender"]
