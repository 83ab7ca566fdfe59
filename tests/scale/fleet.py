"""Hub clients for the load-balancer tests: many @microsoft/signalr connections in one node
process (tests/js/hub_fleet.mjs), and a browser-style WebSocket client."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx

from tests.mcp.nodeproc import ROOT, NodeProcess, require_node_package, run_node
from tests.scale.agents import HubAgent

JS = ROOT / "tests" / "js"
TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")


def tag_of(connection_id: str | None) -> str:
    """The instance tag a connection id or token starts with."""
    return (connection_id or "").split(".", 1)[0]


@dataclass
class Fleet:
    """What the node process reported: per connection, its id, events and states."""

    proc: NodeProcess
    where: dict[str, str] = field(default_factory=dict)  # name -> connectionId
    events: dict[str, Counter[str]] = field(default_factory=dict)  # name -> change -> count
    states: dict[str, list[str]] = field(default_factory=dict)
    subscribed: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def pump(self) -> None:
        while True:
            try:
                message = await self.proc.message()
            except AssertionError:
                return  # the process ended
            self._on(message)
            self._changed.set()
            self._changed = anyio.Event()

    def _on(self, m: dict[str, Any]) -> None:
        name = m.get("name")
        if "token" in m:
            self.tokens.append(m["token"])
        elif "event" in m:
            self.events.setdefault(name, Counter())[m["id"]] += 1
        elif "state" in m:
            self.states.setdefault(name, []).append(m["state"])
            if m.get("error"):
                self.errors.append(m)
            if m.get("connectionId"):
                self.where[name] = m["connectionId"]
        elif "subscribed" in m:
            self.subscribed.setdefault(name, {})[m["subscribed"]] = m["status"]
        elif "dropped" in m:
            self.dropped.add(name)
        elif "subscribeError" in m or "error" in m:
            self.errors.append(m)

    async def until(self, done: Callable[[], bool], within: float, what: str) -> None:
        """Wait (woken by each message) until ``done()``; fail after ``within`` seconds."""
        try:
            with anyio.fail_after(within):
                while not done():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what}: not within {within}s; errors {self.errors}, "
                                 f"states {self.states}") from None

    async def send(self, **command: Any) -> None:
        await self.proc.send_line(json.dumps(command))

    async def open(self, name: str, key: str, transport: str, spelling: str,
                   stateful: bool = False) -> None:
        await self.send(cmd="open", name=name, key=key, transport=transport, spelling=spelling,
                        stateful=stateful)
        await self.until(lambda: name in self.where or any(
            e.get("name") == name for e in self.errors), 30, f"{name} connected")
        assert name in self.where, self.errors

    async def subscribe(self, name: str, change_id: str) -> None:
        await self.send(cmd="subscribe", name=name, id=change_id)
        await self.until(lambda: change_id in self.subscribed.get(name, {}), 30,
                         f"{name} subscribed")

    async def drop(self, name: str) -> None:
        """Drop the connection's WebSocket abruptly."""
        await self.send(cmd="drop", name=name)
        await self.until(lambda: name in self.dropped, 10, f"{name} dropped")

    def count(self, name: str, change_id: str) -> int:
        return self.events.get(name, Counter())[change_id]


@asynccontextmanager
async def fleet(hub_url: str) -> AsyncIterator[Fleet]:
    node = require_node_package(JS, "@microsoft/signalr")
    async with run_node(node, JS / "hub_fleet.mjs", [hub_url], JS) as proc, \
            anyio.create_task_group() as tg:
        f = Fleet(proc)
        tg.start_soon(f.pump)
        try:
            yield f
        finally:
            await f.send(cmd="stop")


class BrowserStyleAgent(HubAgent):
    """What a browser's SignalR client does: negotiate, then a WebSocket with the connection
    token and the API key in the query string (browsers cannot set headers on WebSockets).
    Here the key is in the query string on negotiate too, so no request carries a header."""

    token = ""

    async def connect_negotiated(self, base_url: str, key: str, tg: anyio.abc.TaskGroup
                                 ) -> str:
        """Negotiate and connect; returns the connection token."""
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(f"{base_url}/hubs/mcp/negotiate",
                                params={"negotiateVersion": "1", "access_token": key})
        assert r.status_code == 200, r.text
        self.token = r.json()["connectionToken"]
        ws_base = base_url.replace("http://", "ws://") + "/hubs/mcp"
        await self.connect(f"{ws_base}?id={self.token}", key, tg)
        return self.token
