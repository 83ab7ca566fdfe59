"""Agents the load generator runs: each waits for the decisions on its own pending changes.

Kinds: ``hub-ws``, ``hub-sse``, ``hub-lp`` (our SignalR hub on each transport, raw wire
protocol), ``mcp-legacy``, ``mcp-modern`` (the official MCP Python SDK; ``mcp-legacy-raw`` and
``mcp-modern-raw`` send the same requests over raw HTTP, ``mcp_raw``), ``poll`` (REST
``GET`` every ``poll_interval`` seconds) and ``sio`` (a raw Engine.IO 4 / Socket.IO 5
WebSocket client for the python-socketio peer). Every agent calls ``record(change_id)`` the
moment a decision reaches it; the timestamp is ``time.monotonic()`` (system-wide on Linux,
so comparable with the decider's, which runs in another process).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks.miniclient import MiniHttp

RS = "\x1e"
HANDSHAKE = json.dumps({"protocol": "json", "version": 1}) + RS
PING = json.dumps({"type": 6}) + RS
DECISION_TARGETS = {"PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired"}
URI_PREFIX = "colaflow://pending-changes/"

Record = Callable[[str], None]


class AgentError(Exception):
    """An agent could not connect or subscribe."""


def _invocation(invocation_id: str, target: str, *args: Any) -> str:
    return json.dumps({"type": 1, "invocationId": invocation_id, "target": target,
                       "arguments": list(args)}) + RS


class Agent:
    """Base: ``start`` connects and subscribes; ``run`` receives until cancelled."""

    def __init__(self, port: int, api_key: str, change_ids: list[str], record: Record,
                 **options: Any) -> None:
        self.port = port
        self.api_key = api_key
        self.change_ids = change_ids
        self.record = record
        self.options = options

    async def start(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        """Client keep-alive, where the protocol needs one (SignalR: within 30 s)."""

    def local_ports(self) -> list[int]:
        return []

    async def close(self) -> None:
        pass


class _SignalRFrames:
    """Splits hub text into messages; records decisions, returns the rest."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.buffer = ""

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buffer += text
        *whole, self.buffer = self.buffer.split(RS)
        out = []
        for raw in whole:
            if not raw:
                continue
            msg = json.loads(raw)
            if msg.get("type") == 1 and msg.get("target") in DECISION_TARGETS:
                self.record(msg["arguments"][0]["pendingChangeId"])
            else:
                out.append(msg)
        return out


class HubWebSocketAgent(Agent):
    """Our hub over WebSockets, skip-negotiation, as the SignalR clients do it (option
    ``negotiate``: negotiate first and connect with the connection token, as they do when
    not told to skip it)."""

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{self.port}/hubs/mcp?access_token={self.api_key}"
        if self.options.get("negotiate"):
            from benchmarks.miniclient import MiniHttp

            http = MiniHttp("127.0.0.1", self.port,
                            {"Authorization": f"Bearer {self.api_key}"})
            try:
                status, body = await http.request("POST", "/hubs/mcp/negotiate"
                                                  "?negotiateVersion=1")
            finally:
                await http.close()
            if status != 200:
                raise AgentError(f"negotiate: {status}")
            url += "&id=" + json.loads(body)["connectionToken"]
        self.ws = await connect(url, max_size=None, open_timeout=120, ping_interval=None,
                                close_timeout=1, compression=None)
        self.frames = _SignalRFrames(self.record)
        await self.ws.send(HANDSHAKE)
        if await self._next() != {}:
            raise AgentError("handshake refused")
        for n, cid in enumerate(self.change_ids):
            await self.ws.send(_invocation(str(n), "SubscribeToPendingChange", cid))
            while True:
                msg = await self._next()
                if msg.get("type") == 3 and msg.get("invocationId") == str(n):
                    if msg.get("error"):
                        raise AgentError(msg["error"])
                    break

    async def _next(self) -> dict[str, Any]:
        while True:
            raw = await self.ws.recv()
            for msg in self.frames.feed(raw if isinstance(raw, str) else raw.decode()):
                if msg.get("type") != 6:
                    return msg

    async def run(self) -> None:
        async for raw in self.ws:
            self.frames.feed(raw if isinstance(raw, str) else raw.decode())

    async def ping(self) -> None:
        await self.ws.send(PING)

    def local_ports(self) -> list[int]:
        return [int(self.ws.local_address[1])]

    async def close(self) -> None:
        await self.ws.close()


class _HubHttpAgent(Agent):
    """Shared part of the SSE and long-polling hub agents (aiohttp)."""

    async def _negotiate(self) -> None:
        import aiohttp

        self.base = f"http://127.0.0.1:{self.port}/hubs/mcp"
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.api_key}"},
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=120))
        async with self.session.post(f"{self.base}/negotiate?negotiateVersion=1") as r:
            body = await r.json()
        self.token = body["connectionToken"]
        self.frames = _SignalRFrames(self.record)
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def _post(self, text: str) -> None:
        async with self.session.post(self.base, params={"id": self.token}, data=text) as r:
            if r.status != 200:
                raise AgentError(f"send failed: {r.status}")

    async def _subscribe_all(self) -> None:
        await self._post(HANDSHAKE)
        if await self.inbox.get() != {}:
            raise AgentError("handshake refused")
        for n, cid in enumerate(self.change_ids):
            await self._post(_invocation(str(n), "SubscribeToPendingChange", cid))
            while True:
                msg = await self.inbox.get()
                if msg.get("type") == 3 and msg.get("invocationId") == str(n):
                    if msg.get("error"):
                        raise AgentError(msg["error"])
                    break

    def _feed(self, text: str) -> None:
        for msg in self.frames.feed(text):
            if msg.get("type") != 6:
                self.inbox.put_nowait(msg)

    async def ping(self) -> None:
        await self._post(PING)

    async def close(self) -> None:
        await self.session.close()


class HubSseAgent(_HubHttpAgent):
    async def start(self) -> None:
        await self._negotiate()
        self.stream = await self.session.get(
            self.base, params={"id": self.token}, headers={"Accept": "text/event-stream"})
        self.reader = asyncio.create_task(self._read())
        await self._subscribe_all()

    async def _read(self) -> None:
        async for line in self.stream.content:
            if line.startswith(b"data: "):
                self._feed(line[6:].rstrip(b"\r\n").decode())

    async def run(self) -> None:
        await self.reader

    async def close(self) -> None:
        self.reader.cancel()
        self.stream.close()
        await super().close()


class HubLongPollingAgent(_HubHttpAgent):
    async def start(self) -> None:
        await self._negotiate()
        async with self.session.get(self.base, params={"id": self.token}) as r:
            await r.read()  # the first poll returns at once
        self.reader = asyncio.create_task(self._poll_loop())
        await self._subscribe_all()

    async def _poll_loop(self) -> None:
        while True:
            async with self.session.get(self.base, params={"id": self.token}) as r:
                if r.status == 204:
                    return
                self._feed((await r.read()).decode())

    async def run(self) -> None:
        await self.reader

    async def close(self) -> None:
        self.reader.cancel()
        await super().close()


class PollingAgent(Agent):
    """REST polling: ``GET`` each undecided change every ``poll_interval`` seconds."""

    async def start(self) -> None:
        self.http = MiniHttp("127.0.0.1", self.port, {"Authorization": f"Bearer {self.api_key}"})
        await self.http.connect()
        self.waiting = set(self.change_ids)
        await self._poll_once()

    async def _poll_once(self) -> None:
        for cid in list(self.waiting):
            status, body = await self.http.request("GET", f"/api/mcp/pending-changes/{cid}")
            if status == 200 and json.loads(body)["status"] != "Pending":
                self.waiting.discard(cid)
                self.record(cid)

    async def run(self) -> None:
        interval = float(self.options.get("poll_interval", 1.0))
        # Agents start at random phases, as independent agents would.
        await asyncio.sleep(interval * (hash(self.change_ids[0]) % 1000) / 1000)
        next_at = time.monotonic()
        while self.waiting:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self._poll_once()

    def local_ports(self) -> list[int]:
        port = self.http.local_port
        return [port] if port else []

    async def close(self) -> None:
        await self.http.close()


class McpAgent(Agent):
    """The official MCP Python SDK: legacy ``resources/subscribe`` or modern ``listen``."""

    shared_http: Any = None

    @classmethod
    def http_client(cls, api_key: str) -> Any:
        if cls.shared_http is None:
            import httpx2

            cls.shared_http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=httpx2.Timeout(120, read=3600),
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None),
            )
        return cls.shared_http

    async def start(self) -> None:
        import warnings
        from contextlib import AsyncExitStack

        import mcp_types as types
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared.exceptions import MCPDeprecationWarning

        self.modern = self.options.get("era") == "modern"
        self.stack = AsyncExitStack()
        transport = streamable_http_client(f"http://127.0.0.1:{self.port}/mcp",
                                           http_client=self.http_client(self.api_key))

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                self.record(str(message.params.uri).removeprefix(URI_PREFIX))

        client = Client(transport, mode="auto" if self.modern else "legacy",
                        message_handler=None if self.modern else on_message, cache=None)
        self.client = await self.stack.enter_async_context(client)
        uris = [URI_PREFIX + cid for cid in self.change_ids]
        if self.modern:
            self.sub = await self.stack.enter_async_context(
                self.client.listen(resource_subscriptions=uris))
            honored = self.sub.honored.resource_subscriptions or []
            if len(honored) != len(uris):
                raise AgentError(f"listen honored {len(honored)} of {len(uris)}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                for uri in uris:
                    await self.client.session.subscribe_resource(uri)

    async def run(self) -> None:
        if not self.modern:
            await asyncio.Event().wait()  # updates arrive through the message handler
            return
        from mcp.shared.subscriptions import ResourceUpdated

        async for event in self.sub:
            if isinstance(event, ResourceUpdated):
                self.record(str(event.uri).removeprefix(URI_PREFIX))

    async def close(self) -> None:
        await self.stack.aclose()


class SocketIoAgent(Agent):
    """A raw Engine.IO 4 / Socket.IO 5 WebSocket client (same library as the hub agent)."""

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        url = (f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
               f"&access_token={self.api_key}")
        self.ws = await connect(url, max_size=None, open_timeout=120, ping_interval=None,
                                close_timeout=1, compression=None)
        opened = await self.ws.recv()
        if not str(opened).startswith("0"):
            raise AgentError(f"unexpected open packet {opened!r}")
        await self.ws.send("40")
        while not str(await self._next()).startswith("40"):
            pass
        for n, cid in enumerate(self.change_ids):
            await self.ws.send(f"42{n}" + json.dumps(["subscribe", cid]))
            while not str(await self._next()).startswith(f"43{n}"):
                pass

    async def _next(self) -> str:
        while True:
            raw = await self.ws.recv()
            text = raw if isinstance(raw, str) else raw.decode()
            if not self._handle(text):
                return text

    def _handle(self, text: str) -> bool:
        """Answer pings and record events; True if the packet was consumed."""
        if text == "2":
            self._pong = asyncio.ensure_future(self.ws.send("3"))
            return True
        if text.startswith("42["):
            name, payload = json.loads(text[2:])[:2]
            if name in DECISION_TARGETS:
                self.record(payload["pendingChangeId"])
                return True
        return False

    async def run(self) -> None:
        async for raw in self.ws:
            self._handle(raw if isinstance(raw, str) else raw.decode())

    def local_ports(self) -> list[int]:
        return [int(self.ws.local_address[1])]

    async def close(self) -> None:
        await self.ws.close()


KINDS: dict[str, type[Agent]] = {
    "hub-ws": HubWebSocketAgent,
    "hub-sse": HubSseAgent,
    "hub-lp": HubLongPollingAgent,
    "poll": PollingAgent,
    "mcp-legacy": McpAgent,
    "mcp-modern": McpAgent,
    "sio": SocketIoAgent,
}


def make_agent(kind: str, port: int, api_key: str, change_ids: list[str], record: Record,
               **options: Any) -> Agent:
    if kind in ("mcp-legacy-raw", "mcp-modern-raw"):  # the SDK's wire without the SDK
        from benchmarks.mcp_raw import RawLegacyAgent, RawModernAgent

        raw = RawLegacyAgent if kind == "mcp-legacy-raw" else RawModernAgent
        return raw(port, api_key, change_ids, record, **options)
    if kind not in KINDS:
        raise ValueError(f"unknown agent kind {kind!r}; one of {', '.join(KINDS)}")
    if kind.startswith("mcp-"):
        options["era"] = kind.removeprefix("mcp-")
    return KINDS[kind](port, api_key, change_ids, record, **options)
