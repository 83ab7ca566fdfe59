"""Raw SignalR wire helpers for tests: just enough client to check the server's answers."""

from __future__ import annotations

import json
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect

RS = "\x1e"
HANDSHAKE = json.dumps({"protocol": "json", "version": 1}) + RS


def frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(part) for part in text.split(RS) if part]


def msg(obj: dict[str, Any]) -> str:
    return json.dumps(obj) + RS


class RawWs:
    """A WebSocket hub client that keeps unread frames in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def next(self, within: float = 5.0, skip_pings: bool = True) -> dict[str, Any]:
        """The next frame (pings skipped unless asked for)."""
        with anyio.fail_after(within):
            while True:
                while self.pending:
                    item = self.pending.pop(0)
                    if skip_pings and item.get("type") == 6:
                        continue
                    return item
                raw = await self.ws.recv()
                self.pending.extend(frames(raw if isinstance(raw, str) else raw.decode()))

    async def invoke(self, target: str, *args: Any, invocation_id: str = "1",
                     within: float = 5.0) -> dict[str, Any]:
        """Send an invocation and return its completion (events before it are kept)."""
        await self.send(msg({"type": 1, "invocationId": invocation_id, "target": target,
                             "arguments": list(args)}))
        kept: list[dict[str, Any]] = []
        try:
            while True:
                item = await self.next(within)
                if item.get("type") == 3 and item.get("invocationId") == invocation_id:
                    return item
                kept.append(item)
        finally:
            self.pending[:0] = kept

    async def closed_code(self, within: float = 5.0) -> int | None:
        """Read until the server closes the socket; its close code."""
        with anyio.fail_after(within):
            try:
                while True:
                    await self.ws.recv()
            except Exception:
                pass
        return self.ws.close_code

    async def drain_until(self, pred: Any, within: float = 5.0) -> dict[str, Any]:
        with anyio.fail_after(within):
            while True:
                item = await self.next(within)
                if pred(item):
                    return item


async def open_ws(url: str, key: str | None, *, query: str = "", handshake: bool = True,
                  header: bool = False) -> RawWs:
    params = []
    if key and not header:
        params.append(f"access_token={key}")
    if query:
        params.append(query)
    full = url + ("?" + "&".join(params) if params else "")
    headers = {"Authorization": f"Bearer {key}"} if key and header else None
    ws = await connect(full, additional_headers=headers, open_timeout=5, max_size=None)
    raw = RawWs(ws)
    if handshake:
        await raw.send(HANDSHAKE)
        assert await raw.next() == {}
    return raw
