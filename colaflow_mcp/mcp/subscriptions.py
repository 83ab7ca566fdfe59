"""MCP subscriptions to pending changes, on both protocol eras, fed by the Notifier.

- Legacy (2025-06-18 … 2025-11-25): ``resources/subscribe`` / ``resources/unsubscribe``,
  keyed by ``Mcp-Session-Id``; updates go out on the session's standalone GET stream.
- Modern (2026-07-28): ``subscriptions/listen``; the listen request's response is the stream.

Both register with ``Notifier.subscribe`` under the caller's tenant, which makes a foreign
change look exactly like a missing one and delivers an already-decided change at once.
Every subscriber's outbound queue is bounded by the number of changes it watches (each
change is delivered to a subscriber at most once), so it cannot grow without limit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Protocol

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import GET_STREAM_KEY, MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ResourceUpdated,
    event_to_notification,
)

from colaflow_mcp import metrics
from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.delivery.notifier import Notifier
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.domain.uris import PENDING_CHANGE_PREFIX, change_id_of, is_other_colaflow_uri
from colaflow_mcp.mcp.context import require_principal
from colaflow_mcp.mcp.event_store import SessionEventStore

logger = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]
Update = tuple[str, float | None]
StoreOf = Callable[[str], SessionEventStore | None]


def update_notification(uri: str, subscription_id: types.RequestId
                        ) -> types.ServerNotification:
    """The notification a listen stream sends for an update of ``uri``."""
    return event_to_notification(ResourceUpdated(uri=uri),
                                 {SUBSCRIPTION_ID_META_KEY: subscription_id})


class DirectOpen:
    """A listen request the endpoint serves itself (hook 11): the handler acks, hands its
    subscriber over here and returns at once; the endpoint streams the updates."""

    __slots__ = ("stream",)

    def __init__(self) -> None:
        self.stream: ListenStream | None = None


DIRECT_OPEN: ContextVar[DirectOpen | None] = ContextVar("colaflow_mcp_direct_listen",
                                                        default=None)


_PRINCIPALS: dict[Principal, Principal] = {}
MAX_SHARED_PRINCIPALS = 10_000


def shared_principal(principal: Principal) -> Principal:
    """``principal``, or an equal one already held: a listen stream keeps its caller's
    principal for its life, and the idle streams of one API key need not each hold a copy
    (each request authenticates to a new object)."""
    shared = _PRINCIPALS.get(principal)
    if shared is None:
        if len(_PRINCIPALS) >= MAX_SHARED_PRINCIPALS:
            _PRINCIPALS.clear()  # a bound, not an eviction policy
        shared = _PRINCIPALS[principal] = principal
    return shared


def resource_updated(uri: str) -> types.JSONRPCNotification:
    """``notifications/resources/updated`` as the SDK's session builds it (typed model,
    dumped by alias without None, wrapped by its dispatcher)."""
    data = types.ResourceUpdatedNotification(
        params=types.ResourceUpdatedNotificationParams(uri=uri),
    ).model_dump(by_alias=True, mode="json", exclude_none=True)
    return types.JSONRPCNotification(jsonrpc="2.0", method=data["method"],
                                     params=dict(data["params"]))


def not_found(uri: str) -> MCPError:
    """The one answer for a missing, malformed or foreign resource."""
    return MCPError(types.INVALID_PARAMS, f"Resource not found: {uri}", {"uri": uri})


class _Watcher:
    """Shared part of both subscriber kinds: who, watched URIs, a bounded queue.

    The queue is a plain deque, not a memory object stream: an idle MCP session costs
    memory per session (issue 14), and a stream with its waiting receiver is ~2 KiB of
    objects kept for nothing while no decision is due.
    """

    __slots__ = ("principal", "_tenant_id", "uris", "_queue", "capacity", "closed")

    def __init__(self, principal: Principal, capacity: int) -> None:
        self.principal = principal
        self._tenant_id = principal.tenant_id
        self.uris: dict[str, str] = {}  # change id -> URI as the client spelled it
        # (URI, the decision's commit time for colaflow_notify_seconds, None for a catch-up);
        # made by the first update.
        self._queue: deque[Update] | None = None
        # +1: room for a change that is re-subscribed after its update was queued.
        self.capacity = capacity + 1
        self.closed = False

    @property
    def queue(self) -> deque[Update]:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    def _queued(self) -> bool:
        return bool(self._queue)

    @property
    def tenant_id(self) -> str:
        return self._tenant_id

    def deliver(self, event: DecisionEvent) -> None:
        """Queue the update; never blocks (the queue holds one entry per watched change)."""
        if self.closed:
            return  # the session or stream is already gone
        uri = self.uris.get(event.change_id, event.resource_uri)
        if len(self.queue) >= self.capacity:
            logger.warning("MCP subscriber queue full; dropped the update for %s", uri)
            return
        self.queue.append((uri, event.committed_at))
        self._wake()

    def close(self) -> None:
        """No more updates; what is queued is still sent."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        raise NotImplementedError


class LegacySession(_Watcher):
    """One Streamable HTTP session's ``resources/subscribe`` subscriptions.

    Holds no task while idle: an update starts a sender (with ``spawn``) that empties the
    queue into the session's event store and ends. The store serves the session's GET
    stream (``get_stream.GetStream``) and keeps the update for replay while no stream is
    open: the same place the SDK's message router would have put it, without going through
    the SDK's session, which a parked session does not have (``sdk_hooks``, hook 9).
    """

    __slots__ = ("session_id", "_store_of", "_spawn", "_sending")

    def __init__(self, session_id: str, principal: Principal, store_of: StoreOf,
                 capacity: int, spawn: Spawn) -> None:
        super().__init__(principal, capacity)
        self.session_id = session_id
        self._store_of = store_of
        self._spawn = spawn
        self._sending = False

    def _wake(self) -> None:
        if self._sending or not self._queued() or self.closed:
            return
        self._sending = True
        try:
            self._spawn(self._send_queued)
        except RuntimeError:  # the endpoint is stopping: nothing more is sent
            self._sending = False

    async def _send_queued(self) -> None:
        """Send queued updates, in order, until the queue is empty or the session closed."""
        try:
            while self._queued() and not self.closed:
                uri, committed = self.queue.popleft()
                try:
                    store = self._store_of(self.session_id)
                    if store is None or store.closed:
                        return  # the session ended meanwhile
                    # What the SDK's ``ServerSession.send_resource_updated`` stores via its
                    # message router (no related request: the GET stream's events).
                    await store.store_event(GET_STREAM_KEY, resource_updated(uri))
                    metrics.notified("mcp", committed)
                except Exception:
                    logger.exception("sending resources/updated to session %s failed",
                                     self.session_id[:8])
        finally:
            self._sending = False


class Sender(Protocol):
    """Who sends a directly served listen stream's updates (``listen_stream.DirectListen``)."""

    def changed(self) -> None: ...


class ListenStream(_Watcher):
    """One ``subscriptions/listen`` stream (2026-07-28); its request's task sends, or (served
    directly, hook 11) the ``Sender`` it is attached to."""

    __slots__ = ("_ready", "_sender")

    def __init__(self, principal: Principal, capacity: int) -> None:
        super().__init__(principal, capacity)
        self._ready: anyio.Event | None = None  # exists only while the sender waits
        self._sender: Sender | None = None

    def attach(self, sender: Sender) -> None:
        """Updates are sent by ``sender`` from now on (told of each one)."""
        self._sender = sender

    def _wake(self) -> None:
        if self._sender is not None:
            self._sender.changed()
        elif self._ready is not None:
            self._ready.set()

    async def updates(self) -> AsyncIterator[Update]:
        """Queued updates, waiting for more, until closed and drained."""
        while True:
            while self._queued():
                yield self.queue.popleft()
            if self.closed:
                return
            self._ready = anyio.Event()
            try:
                await self._ready.wait()
            finally:
                self._ready = None


class Subscriptions:
    """Request handlers for both eras and the registry of legacy sessions."""

    def __init__(self, notifier: Notifier, max_per_session: int,
                 terminate_session: Callable[[str], Awaitable[object]] | None = None,
                 store_of: StoreOf = lambda session_id: None) -> None:
        self.notifier = notifier
        self._store_of = store_of  # a legacy session's event store, by session id
        self.max_per_session = max_per_session
        self.sessions: dict[str, LegacySession] = {}
        self.listen_streams: set[ListenStream] = set()
        self._terminate_session = terminate_session
        self._spawn: Spawn | None = None

    def start(self, spawn: Spawn) -> None:
        """Session pumps are started with ``spawn`` (the supervisor's task group)."""
        self._spawn = spawn

    def stop(self) -> None:
        """Forget every session (the endpoint is stopping)."""
        self._spawn = None
        for session_id in list(self.sessions):
            self.session_closed(session_id)

    # -- legacy era ---------------------------------------------------------------------

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        """``resources/subscribe``: watch one pending change on this session."""
        principal = require_principal()
        uri = str(params.uri)
        change_id = change_id_of(uri)
        if change_id is None:
            if is_other_colaflow_uri(uri):
                raise MCPError(
                    types.INVALID_PARAMS,
                    f"Only {PENDING_CHANGE_PREFIX}{{id}} can be subscribed, not {uri}",
                    {"uri": uri})
            raise not_found(uri)
        session = self._session_for(ctx, principal)
        if change_id in session.uris:
            # Subscribing again starts afresh, so a decided change is reported again (a
            # client that lost the first update this way still hears the outcome).
            self.notifier.unregister(session, change_id)
        elif len(session.uris) >= self.max_per_session:
            raise MCPError(types.INVALID_REQUEST,
                           f"Too many subscriptions on this session (max {self.max_per_session})")
        session.uris[change_id] = uri
        snapshot = await self.notifier.subscribe(session, change_id)
        if snapshot is None:
            session.uris.pop(change_id, None)
            raise not_found(uri)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        """``resources/unsubscribe``: stop watching; unknown URIs are a no-op."""
        require_principal()
        session = self.sessions.get(_session_id(ctx) or "")
        change_id = change_id_of(str(params.uri))
        if session is not None and change_id is not None:
            session.uris.pop(change_id, None)
            self.notifier.unregister(session, change_id)
        return types.EmptyResult()

    def _session_for(self, ctx: ServerRequestContext[Any, Any], principal: Principal
                     ) -> LegacySession:
        session_id = _session_id(ctx)
        if session_id is None:
            raise MCPError(types.INVALID_REQUEST,
                           "resources/subscribe needs a session: initialize first "
                           "(stateful Streamable HTTP, Mcp-Session-Id header)")
        session = self.sessions.get(session_id)
        if session is not None and session.tenant_id == principal.tenant_id:
            return session
        if self._spawn is None:
            raise MCPError(types.INTERNAL_ERROR, "the MCP endpoint is shutting down")
        if session is not None:  # cannot happen: the session manager binds a session to its key
            self.session_closed(session_id)
        session = LegacySession(session_id, principal, self._store_of, self.max_per_session,
                                self._spawn)
        self.sessions[session_id] = session
        return session

    def session_closed(self, session_id: str) -> None:
        """Forget a session's subscriptions (DELETE, idle timeout, crash, shutdown)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        self.notifier.unregister_all(session, session.uris.keys())
        session.uris.clear()
        session.close()

    def live_key_ids(self) -> set[str]:
        """The API keys behind open sessions and listen streams."""
        watchers: list[_Watcher] = [*self.sessions.values(), *self.listen_streams]
        return {w.principal.api_key_id for w in watchers if w.principal.api_key_id}

    async def drop_revoked(self, revoked: set[str]) -> int:
        """End the sessions and listen streams whose API key is in ``revoked``.

        Requests are authenticated one by one, but a GET stream or a listen stream outlives
        the request that opened it; this is how a revoked key stops hearing anything.
        """
        dropped = 0
        watchers: list[_Watcher] = [*self.sessions.values(), *self.listen_streams]
        for watcher in watchers:
            if watcher.principal.api_key_id not in revoked:
                continue
            dropped += 1
            if isinstance(watcher, LegacySession):
                self.session_closed(watcher.session_id)
                if self._terminate_session is not None:
                    await self._terminate_session(watcher.session_id)
            else:
                # Ends the stream gracefully: the handler sends its final result.
                self.notifier.unregister_all(watcher, watcher.uris.keys())
                watcher.close()
        if dropped:
            logger.info("closed %d MCP subscription(s) of revoked or expired keys", dropped)
        return dropped

    # -- modern era ---------------------------------------------------------------------

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """``subscriptions/listen``: ack the honored URIs, then stream their updates.

        Only the caller's own pending changes are honored; anything else (another tenant's,
        missing, malformed, not a pending change) is left out of the ack, and the list
        flags are not honored (this server never changes its tools, prompts or resources).
        """
        principal = require_principal()
        subscription_id = ctx.request_id
        if subscription_id is None:
            raise MCPError(types.INVALID_REQUEST, "subscriptions/listen requires a request id")
        requested = list(params.notifications.resource_subscriptions or ())
        if len(requested) > self.max_per_session:
            raise MCPError(types.INVALID_PARAMS,
                           f"Too many resource subscriptions (max {self.max_per_session})")
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        direct = DIRECT_OPEN.get()
        stream = ListenStream(shared_principal(principal), max(1, len(requested)))
        self.listen_streams.add(stream)
        handed_over = False
        try:
            honored: list[str] = []
            for uri in requested:
                change_id = change_id_of(uri)
                if change_id is None or change_id in stream.uris:
                    continue
                stream.uris[change_id] = uri
                if await self.notifier.subscribe(stream, change_id) is None:
                    del stream.uris[change_id]
                    continue
                honored.append(uri)
            # An update queued above (already decided) is sent after the ack, which stays
            # the first frame: only this task writes the stream.
            await ctx.session.send_notification(
                types.SubscriptionsAcknowledgedNotification(
                    params=types.SubscriptionsAcknowledgedNotificationParams(
                        notifications=types.SubscriptionFilter(
                            resource_subscriptions=honored or None),
                        _meta=meta,
                    )
                ),
                related_request_id=subscription_id,
            )
            if direct is not None:
                # The endpoint streams the updates (``listen_stream``); the result is
                # serialised now and sent when the stream ends.
                direct.stream = stream
                handed_over = True
                return types.SubscriptionsListenResult(_meta=meta)
            async for uri, committed in stream.updates():
                await ctx.session.send_notification(
                    update_notification(uri, subscription_id),
                    related_request_id=subscription_id,
                )
                metrics.notified("mcp", committed)
        finally:
            if not handed_over:
                self.listen_closed(stream)
        return types.SubscriptionsListenResult(_meta=meta)

    def listen_closed(self, stream: ListenStream) -> None:
        """A listen stream ended: forget its subscriptions."""
        self.listen_streams.discard(stream)
        self.notifier.unregister_all(stream, stream.uris.keys())
        stream.close()


def _session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    # The transport has already checked this header against its own session id.
    request = ctx.request
    if request is None:
        return None
    value = request.headers.get(MCP_SESSION_ID_HEADER)
    return str(value) if value else None
