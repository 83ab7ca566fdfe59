"""Backplane: how decision events reach every instance. In-process by default, Redis to scale.

The bus is a doorbell, not the truth: a lost message is recovered from the database by the
announce sweep and by each instance's reconcile pass (run after every Redis reconnect).

Every publisher (the outbox, the announce sweep) dispatches to this instance's subscribers
before publishing, so an instance skips its own messages when they come back from Redis:
each message starts with the sender's origin id, recognised by its first bytes before any
JSON is parsed. Another instance's message is parsed only if some local subscriber may want
it: its change and tenant ids, which follow the origin, are read from the bytes and asked
(``wants``); dispatching one nobody here waits for would deliver nothing. A batch is
published in one pipeline (one write, one read of the replies).

Creations (for review queues) travel on a channel of their own, ``<channel>:created``:
an instance of an older release, which knows only decisions, never sees one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio

from colaflow_mcp.config import Settings
from colaflow_mcp.delivery.events import DecisionEvent

logger = logging.getLogger(__name__)

CHANNEL = "colaflow:decisions"
# While Redis stays down, one line says so again this often (the first loss is said at
# once, each failed attempt in between only at debug level).
STILL_DOWN_EVERY_SECONDS = 300.0


def created_channel(channel: str) -> str:
    """The channel of creation events beside a decision channel."""
    return channel + ":created"

EventHandler = Callable[[DecisionEvent], object]
# ``wants(change_id, tenant_id)``: whether dispatching that change's event here could
# deliver it to anyone (False only when it surely would not).
InterestCheck = Callable[[str, str], bool]
# Called after every (re)connection with the time from which messages may have been missed
# (None on the first connection).
ReconnectHandler = Callable[[datetime | None], Awaitable[None]]


class Backplane(Protocol):
    """Fan-out of change events to all instances (the publishing one has dispatched them
    to its own subscribers already; it may or may not get them back)."""

    name: str

    @property
    def healthy(self) -> bool: ...

    async def publish(self, event: DecisionEvent) -> None:
        """Send to every instance; raises if the event could not be handed over."""

    async def publish_many(self, events: Sequence[DecisionEvent]) -> list[DecisionEvent]:
        """Send a batch at once; returns those handed over (each one surely was), or
        raises when it cannot tell (none is counted as handed over)."""

    async def run(self, on_event: EventHandler, on_reconnect: ReconnectHandler,
                  wants: InterestCheck | None = None) -> None:
        """Listen until cancelled; call ``on_reconnect`` after every (re)connection.
        Events ``wants`` declines may be dropped unparsed (``on_event`` would be a no-op)."""

    def status(self) -> dict[str, object]:
        """Liveness details for ``/health``."""

    async def aclose(self) -> None:
        """Release connections (after ``run`` has returned)."""


class MemoryBackplane:
    """Single process: publishing is handing the event to the local handler."""

    name = "memory"

    def __init__(self) -> None:
        self._handler: EventHandler | None = None

    @property
    def healthy(self) -> bool:
        return True

    async def publish(self, event: DecisionEvent) -> None:
        if self._handler is not None:
            self._handler(event)

    async def publish_many(self, events: Sequence[DecisionEvent]) -> list[DecisionEvent]:
        for event in events:
            await self.publish(event)
        return list(events)

    async def run(self, on_event: EventHandler, on_reconnect: ReconnectHandler,
                  wants: InterestCheck | None = None) -> None:
        self._handler = on_event
        try:
            await anyio.sleep_forever()
        finally:
            self._handler = None

    def status(self) -> dict[str, object]:
        return {"backplane": self.name, "listening": self._handler is not None}

    async def aclose(self) -> None:
        pass


class RedisBackplane:
    """Redis pub/sub. The listener reconnects with backoff and never dies silently."""

    name = "redis"

    def __init__(self, url: str, max_backoff: float = 5.0, channel: str = CHANNEL,
                 liveness_seconds: float = 6.0, connect_timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.channel = channel
        self.created_channel = created_channel(channel)
        # A link silent this long (pings unanswered) is treated as dead and reconnected.
        self.liveness_seconds = liveness_seconds
        self.max_backoff = max_backoff
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=None,
            health_check_interval=5,
        )
        self._pub = aioredis.Redis.from_url(url, socket_connect_timeout=connect_timeout,
                                            socket_timeout=connect_timeout)
        # This process's messages (random per process: two instances configured with the
        # same instance id must still hear each other).
        self.origin = uuid.uuid4().hex[:16]
        self._own_prefix = ('{"origin":"' + self.origin + '",').encode()
        self.own_skipped = 0
        self.unwanted_skipped = 0  # other instances' messages nobody here waited for
        self._listening = False
        # Set, then replaced, whenever the link comes up or goes down.
        self.link_changed = anyio.Event()
        self._last_error: str | None = None
        self._connected_since: float | None = None
        self._heard: float | None = None  # time.monotonic() of the last word from Redis
        self.reconnects = 0
        # The current outage of the listener and of publishing (monotonic start, attempts
        # failed), so each is logged when it begins and ends, not at every attempt.
        self._down: _Outage | None = None
        self._publish_down: _Outage | None = None

    @property
    def healthy(self) -> bool:
        return self._listening

    async def publish(self, event: DecisionEvent) -> None:
        channel = self.created_channel if event.created else self.channel
        try:
            await self._pub.publish(channel, event.to_json(self.origin))
        except Exception as exc:
            self._publish_failed(exc)
            raise
        self._published()

    async def publish_many(self, events: Sequence[DecisionEvent]) -> list[DecisionEvent]:
        """One pipeline (not a transaction) for the batch. An error reply fails only its
        own event; a connection lost mid-way raises (what reached Redis is unknown)."""
        if len(events) == 1:
            await self.publish(events[0])
            return list(events)
        pipe = self._pub.pipeline(transaction=False)
        for event in events:
            pipe.publish(self.created_channel if event.created else self.channel,
                         event.to_json(self.origin))
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            self._publish_failed(exc)
            raise
        self._published()
        return [event for event, reply in zip(events, replies, strict=True)
                if not isinstance(reply, Exception)]

    def _publish_failed(self, exc: Exception) -> None:
        """Publishing failed: said once per outage (at its start), counted after that."""
        if self._publish_down is None:
            self._publish_down = _Outage(time.monotonic())
            logger.warning(
                "redis backplane: publishing failed (%s); until it works again, other "
                "instances' subscribers learn of this instance's decisions from their "
                "periodic reconcile, and the announce sweep publishes them once Redis "
                "answers", _reason(exc))
        self._publish_down.attempts += 1

    def _published(self) -> None:
        """Publishing works: the end of an outage, if there was one, is said at info."""
        if self._publish_down is not None:
            down, self._publish_down = self._publish_down, None
            logger.info("redis backplane: publishing again, after %.1fs (%d attempt(s) "
                        "failed meanwhile)", time.monotonic() - down.since, down.attempts)

    async def run(self, on_event: EventHandler, on_reconnect: ReconnectHandler,
                  wants: InterestCheck | None = None) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel, self.created_channel)
                    missed = self._missed_since()
                    self._set_listening(True)
                    self._connected_since = time.time()
                    self._heard = time.monotonic()
                    self._last_error = None
                    backoff = 0.1
                    self._say_listening()
                    await on_reconnect(missed)
                    await self._listen(pubsub, on_event, wants)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                    exc = exc.exceptions[0]  # the listener's task group: who failed
                self._last_error = type(exc).__name__
                self._say_down(exc)
            finally:
                self._set_listening(False)
            self.reconnects += 1
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _say_listening(self) -> None:
        """The link is up: said at info, with how long it was down if it was."""
        down, self._down = self._down, None
        if down is None:
            logger.info("redis backplane listening on %s", self.channel)
            return
        logger.info("redis backplane listening on %s again, after %.1fs down (%d attempt(s)); "
                    "reconciling this instance's subscribers with the database", self.channel,
                    time.monotonic() - down.since, down.attempts)

    def _say_down(self, exc: Exception) -> None:
        """A failed or lost link: a warning when an outage begins and every
        ``STILL_DOWN_EVERY_SECONDS`` while it lasts, each retry in between at debug."""
        now = time.monotonic()
        reason = _reason(exc)
        if self._down is None:
            self._down = _Outage(now, said_at=now)
            first = self._connected_since is None
            logger.warning(
                "redis backplane %s (%s); reconnecting with backoff up to %gs; until then "
                "this instance's subscribers learn of other instances' decisions from its "
                "periodic reconcile", "cannot connect" if first else "connection lost",
                reason, self.max_backoff)
        elif now - self._down.said_at >= STILL_DOWN_EVERY_SECONDS:
            self._down.said_at = now
            logger.warning("redis backplane still down after %.0fs (%d attempts; %s)",
                           now - self._down.since, self._down.attempts, reason)
        else:
            logger.debug("redis backplane reconnect failed (%s)", reason)
        self._down.attempts += 1

    def _set_listening(self, listening: bool) -> None:
        if listening != self._listening:
            self._listening = listening
            self.link_changed.set()
            self.link_changed = anyio.Event()

    def _missed_since(self) -> datetime | None:
        """Since when messages may have been missed: a link can be dead for up to
        ``liveness_seconds`` before we notice, so that much before we last heard from it."""
        if self._heard is None:
            return None
        last_heard = time.time() - (time.monotonic() - self._heard)
        return datetime.fromtimestamp(last_heard - self.liveness_seconds, UTC)

    async def _listen(self, pubsub: Any, on_event: EventHandler,
                      wants: InterestCheck | None) -> None:
        """Read messages as they come (a blocking read: no timer per message); beside it a
        watchdog pings when the link is idle, so a silently dead one is noticed. Own
        messages are dropped by their first bytes, and those ``wants`` declines by their
        ids, before any JSON is parsed."""
        own = self._own_prefix
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, pubsub)
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:  # redis-py's own health check answered
                    continue
                self._heard = time.monotonic()
                if message.get("type") == "message":
                    data = message["data"]
                    if isinstance(data, bytes) and data.startswith(own):
                        self.own_skipped += 1  # dispatched here before it was published
                        continue
                    if wants is not None and isinstance(data, bytes):
                        ids = route_of(data)
                        if ids is not None and not wants(*ids):
                            self.unwanted_skipped += 1
                            continue
                    try:
                        on_event(DecisionEvent.from_json(data))
                    except Exception:
                        logger.exception("bad message on the backplane; skipped")

    async def _watch(self, pubsub: Any) -> None:
        """Ping a link idle for a tick (``liveness_seconds / 3``, at most 1 s), then at
        most every ``liveness_seconds / 3``; raise once it has been silent for
        ``liveness_seconds``."""
        tick = min(1.0, self.liveness_seconds / 3)
        last_ping = float("-inf")  # the first ping as soon as the link is idle
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            silent = now - (self._heard or now)
            if silent > self.liveness_seconds:
                raise ConnectionError(f"no answer from redis for {silent:.1f}s")
            if silent >= tick and now - last_ping > self.liveness_seconds / 3:
                last_ping = now
                with anyio.move_on_after(tick):  # a full socket must not stall the watch
                    await pubsub.ping()

    def status(self) -> dict[str, object]:
        return {
            "backplane": self.name,
            "listening": self._listening,
            "lastError": self._last_error,
            "reconnects": self.reconnects,
        }

    async def aclose(self) -> None:
        """Close both Redis connections."""
        await self._client.aclose()
        await self._pub.aclose()


_HEAD = b'{"origin":"'
_CHANGE = b'","changeId":"'
_TENANT = b'","tenantId":"'


def route_of(data: bytes) -> tuple[str, str] | None:
    """(change id, tenant id) of a message as ``DecisionEvent.to_json`` writes it with an
    origin, read from its bytes; None when it is not plainly that shape (a previous
    release's message, an escaped character): then it is parsed as JSON."""
    if not data.startswith(_HEAD):
        return None
    start = data.find(_CHANGE, len(_HEAD))
    if start < 0:
        return None
    start += len(_CHANGE)
    mid = data.find(_TENANT, start)
    if mid < 0:
        return None
    end = data.find(b'"', mid + len(_TENANT))
    if end < 0:
        return None
    change, tenant = data[start:mid], data[mid + len(_TENANT):end]
    if b"\\" in change or b"\\" in tenant or b'"' in change:
        return None
    return change.decode(), tenant.decode()


def _reason(exc: Exception) -> str:
    """``ConnectionError: Error 111 connecting to host:6379. Connection refused.``, short."""
    said = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {said[:200]}" if said else type(exc).__name__


@dataclass
class _Outage:
    """One stretch of failures: since when (monotonic), attempts failed, last said."""

    since: float
    attempts: int = 0
    said_at: float = 0.0


def make_backplane(settings: Settings) -> Backplane:
    """Redis when ``redis_url`` is set, else the in-process backplane."""
    if settings.redis_url:
        return RedisBackplane(
            settings.redis_url, max_backoff=settings.bus_reconnect_max_backoff_seconds,
            channel=settings.redis_channel, liveness_seconds=settings.redis_liveness_seconds,
            connect_timeout=settings.redis_connect_timeout_seconds)
    return MemoryBackplane()
