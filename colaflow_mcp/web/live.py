"""The live queue: Server-Sent Events from the notifier's review-queue subscription.

One stream per open page. It starts with a ``snapshot`` (the tenant's pending changes, so a
reconnecting browser re-syncs) and then carries every ``PendingChangeCreated`` and decision
event of the tenant, exactly as the hub's review queue does (same notifier, same
reconcile). A browser that falls ``console_stream_queue_size`` events behind is cut off
(bounded memory) and re-syncs on its automatic reconnect; so does every stream at
shutdown. Each keep-alive also checks the session: a logged-out session's streams end.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.requests import Request

from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.domain.console import Session
from colaflow_mcp.web.console import Console
from colaflow_mcp.web.security import COOKIE

RETRY_MS = 1000  # the browser reconnects this soon after a drop


class QueueStream:
    """A queue subscriber that hands events to one SSE response, bounded."""

    def __init__(self, tenant_id: str, size: int) -> None:
        self._tenant_id = tenant_id
        self.send: MemoryObjectSendStream[DecisionEvent]
        self.receive: MemoryObjectReceiveStream[DecisionEvent]
        self.send, self.receive = anyio.create_memory_object_stream[DecisionEvent](size)

    @property
    def tenant_id(self) -> str:
        """The tenant whose queue this is."""
        return self._tenant_id

    def deliver(self, event: DecisionEvent) -> None:
        """Queue an event; a browser this far behind is cut off (it re-syncs)."""
        try:
            self.send.send_nowait(event)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.send.close()


def frame(event: str, data: Any) -> bytes:
    """One SSE message."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventStream:
    """The ASGI response of ``GET /inbox/api/events``."""

    def __init__(self, console: Console, session: Session, request: Request) -> None:
        self.console = console
        self.session = session
        self.cookie = request.cookies.get(COOKIE) or ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        console = self.console
        stream = QueueStream(self.session.principal.tenant_id,
                             console.settings.console_stream_queue_size)
        pending = await console.notifier.subscribe_queue(stream)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]})
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._until_disconnect, receive, tg.cancel_scope)
                tg.start_soon(self._until_closing, tg.cancel_scope)
                await self._pump(stream, pending, send)
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the browser went away mid-write
        finally:
            console.notifier.unregister_queue(stream)
            stream.send.close()
        with anyio.move_on_after(1):
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass

    async def _pump(self, stream: QueueStream, pending: list[dict[str, Any]], send: Any
                    ) -> None:
        keepalive = self.console.settings.console_keepalive_seconds
        await send({"type": "http.response.body", "more_body": True,
                    "body": f"retry: {RETRY_MS}\n\n".encode() + frame(
                        "snapshot", {"pending": pending})})
        while True:
            event: DecisionEvent | None = None
            with anyio.move_on_after(keepalive):
                try:
                    event = await stream.receive.receive()
                except anyio.EndOfStream:
                    return  # cut off: too far behind
            if event is not None:
                await send({"type": "http.response.body", "more_body": True,
                            "body": frame(event.target, event.payload)})
                continue
            if await self.console.auth.session(self.cookie) is None:
                await send({"type": "http.response.body", "more_body": True,
                            "body": frame("signedOut", {})})
                return
            await send({"type": "http.response.body", "body": b": keep-alive\n\n",
                        "more_body": True})

    @staticmethod
    async def _until_disconnect(receive: Any, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _until_closing(self, scope: anyio.CancelScope) -> None:
        await self.console.closing.wait()
        scope.cancel()
