"""A hub agent for multi-instance tests: one reader task, completions and events apart."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import anyio
import anyio.abc
from websockets.asyncio.client import ClientConnection, connect

RS = "\x1e"
PING_INTERVAL = 5.0


class HubAgent:
    """Subscribes over a WebSocket; counts each decision event it receives per change."""

    def __init__(self, name: str = "agent") -> None:
        self.name = name
        self.events: Counter[str] = Counter()
        self.payloads: dict[str, dict[str, Any]] = {}
        self._changed = anyio.Event()
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.ws: ClientConnection | None = None
        self._scope: anyio.CancelScope | None = None
        self.closed = anyio.Event()
        self.url = ""

    async def connect(self, hub_url: str, key: str, tg: anyio.abc.TaskGroup) -> None:
        sep = "&" if "?" in hub_url else "?"  # hub_url may name a negotiated connection
        ws = await connect(f"{hub_url}{sep}access_token={key}", open_timeout=10,
                           max_size=None)
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        handshake = await ws.recv()
        assert json.loads(str(handshake).rstrip(RS)) == {}, handshake
        self.ws = ws
        self.url = hub_url
        # Each connection has its own "closed": a late-ending old reader must not mark the
        # new connection closed.
        self.closed = closed = anyio.Event()
        ready = anyio.Event()
        tg.start_soon(self._reader, ws, ready, closed)
        tg.start_soon(self._pinger, ws, closed)
        await ready.wait()

    async def _pinger(self, ws: ClientConnection, closed: anyio.Event) -> None:
        """Keep-alive pings, as every SignalR client sends (the server's client timeout)."""
        while not closed.is_set():
            with anyio.move_on_after(PING_INTERVAL):
                await closed.wait()
            if closed.is_set():
                return
            try:
                await ws.send(json.dumps({"type": 6}) + RS)
            except Exception:
                return

    async def drop(self) -> None:
        """Lose the connection abruptly (no close handshake from our side)."""
        self.closed.set()
        self._changed.set()
        if self._scope is not None:
            self._scope.cancel()
        if self.ws is not None:
            self.ws.transport.abort()
            self.ws = None

    async def _reader(self, ws: ClientConnection, ready: anyio.Event, closed: anyio.Event
                      ) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            ready.set()
            try:
                async for raw in ws:
                    text = raw if isinstance(raw, str) else raw.decode()
                    for part in text.split(RS):
                        if part:
                            self._on_message(json.loads(part))
            except Exception:
                pass
            finally:
                # Wake anyone waiting on a completion, or on events, from this dead
                # connection (also when it was dropped on purpose).
                closed.set()
                self._changed.set()
                for event, _ in self._waiting.values():
                    event.set()

    def _on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == 1 and str(msg.get("target", "")).startswith("PendingChange"):
            payload = msg["arguments"][0]
            cid = payload["pendingChangeId"]
            self.events[cid] += 1
            self.payloads[cid] = payload
            self._changed.set()
            self._changed = anyio.Event()
        elif msg.get("type") == 3:
            waiter = self._waiting.get(str(msg.get("invocationId")))
            if waiter is not None:
                waiter[1].append(msg)
                waiter[0].set()

    async def subscribe(self, change_id: str) -> dict[str, Any]:
        """Invoke SubscribeToPendingChange and return its completion."""
        assert self.ws is not None
        inv = str(next(self._ids))
        event, box = anyio.Event(), []
        self._waiting[inv] = (event, box)
        try:
            try:
                await self.ws.send(json.dumps({"type": 1, "invocationId": inv,
                                               "target": "SubscribeToPendingChange",
                                               "arguments": [change_id]}) + RS)
            except Exception as exc:
                raise ConnectionError(f"send failed: {exc}") from exc
            with anyio.fail_after(10):
                await event.wait()
        finally:
            self._waiting.pop(inv, None)
        if not box:
            raise ConnectionError("connection lost before the completion")
        return box[0]

    async def wait_for(self, change_ids: set[str], within: float) -> None:
        """Until every id has been received at least once (or fail after ``within``).

        Raises ConnectionError if the connection dies first.
        """
        with anyio.fail_after(within):
            while not change_ids <= set(self.events):
                if self.closed.is_set():
                    raise ConnectionError("connection closed while waiting")
                await self._changed.wait()
