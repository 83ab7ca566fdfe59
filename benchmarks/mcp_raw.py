"""Raw-HTTP MCP clients for the session-memory benchmark: the SDK client's wire, no SDK.

The official SDK client costs the load generator ~6 ms of CPU per session set-up (its
anyio task groups, memory streams, httpx) — on the shared 2-core machine, 10,000 legacy
sessions took longer than the 25-minute bound. These agents send what it sends, byte for
byte where it matters (the same headers, bodies and order, captured from ``mcp`` 2.3's
``Client``), over asyncio streams:

- ``mcp-legacy-raw``: ``POST initialize`` (reads ``Mcp-Session-Id``), ``POST
  notifications/initialized`` (202), ``GET`` (the standalone SSE stream, held on its own
  connection), ``POST resources/subscribe`` per watched change; then idle, reading the GET
  stream for ``notifications/resources/updated``.
- ``mcp-modern-raw``: ``POST server/discover``, then ``POST subscriptions/listen`` held on its
  own connection (its response is the stream); waits for the acknowledgement.

POSTs that end (everything but ``listen``) share a worker-wide pool of keep-alive
connections, as the SDK's shared ``httpx`` client pools them; held streams get their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.agents import URI_PREFIX, Agent, AgentError, Record

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
HOST = "127.0.0.1"
CLIENT_INFO = {"name": "mcp", "version": "0.1.0"}
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
               "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
               "io.modelcontextprotocol/clientCapabilities": {}}
UPDATED = "notifications/resources/updated"


class Response:
    """A response head, and its body as a chunked or sized stream on the connection."""

    def __init__(self, reader: asyncio.StreamReader, status: int,
                 headers: dict[str, str]) -> None:
        self.reader = reader
        self.status = status
        self.headers = headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, as it arrives; ends with the body (the connection is then reusable)."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers are sent
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        length = int(self.headers.get("content-length", "0"))
        if length:
            yield await self.reader.readexactly(length)

    async def body(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def events(self) -> AsyncIterator[dict[str, str]]:
        """SSE events (field -> value; ``data`` lines joined), until the body ends."""
        buf = b""
        async for chunk in self.chunks():
            buf = (buf + chunk).replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                event: dict[str, str] = {}
                for line in block.decode().split("\n"):
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    event[name] = event[name] + "\n" + value if name in event and \
                        name == "data" else value
                yield event


class Connection:
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    @property
    def usable(self) -> bool:
        return (self.writer is not None and not self.writer.is_closing()
                and self.reader is not None and not self.reader.at_eof())

    async def request(self, method: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send a request to ``/mcp``; returns once the response head is in."""
        if not self.usable:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        lines = [f"{method} /mcp HTTP/1.1", f"Host: {HOST}:{self.port}",
                 "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        if method != "GET":
            lines.append(f"Content-Length: {len(payload)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        return Response(self.reader, status, fields)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Pool:
    """A worker's keep-alive connections for requests that end (the SDK's ``httpx`` pool)."""

    _pools: dict[tuple[int, str], Pool] = {}

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.idle: list[Connection] = []

    @classmethod
    def of(cls, port: int, api_key: str) -> Pool:
        key = (port, api_key)
        if key not in cls._pools:
            cls._pools[key] = Pool(port, {
                "Authorization": f"Bearer {api_key}",
                "accept": "application/json, text/event-stream",
                "content-type": "application/json"})
        return cls._pools[key]

    async def call(self, method: str, body: Any = None, headers: dict[str, str] | None = None,
                   want_id: object = None) -> tuple[Response, Any]:
        """One request; returns the response and the JSON-RPC message answering
        ``want_id`` (from a JSON or an SSE body), or the raw body when ``want_id`` is None."""
        for attempt in (0, 1):
            conn = self.idle.pop() if self.idle else Connection(self.port, self.headers)
            try:
                response = await conn.request(method, body, headers)
            except (asyncio.IncompleteReadError, ConnectionError):
                conn.close()
                if attempt:
                    raise
                continue  # the server closed an idle kept-alive connection: once more
            answer: Any = None
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                async for event in response.events():
                    if event.get("data"):
                        message = json.loads(event["data"])
                        if message.get("id") == want_id and want_id is not None:
                            answer = message
            else:
                raw = await response.body()
                answer = json.loads(raw) if raw and want_id is not None else raw
            if response.headers.get("connection", "").lower() == "close":
                conn.close()
            else:
                self.idle.append(conn)
            return response, answer
        raise AssertionError("unreachable")


def _result(answer: Any, what: str) -> Any:
    if not isinstance(answer, dict) or "result" not in answer:
        raise AgentError(f"{what}: {str(answer)[:300]}")
    return answer["result"]


class _RawAgent(Agent):
    """What both eras' raw agents share: the held stream's updates are recorded."""

    events: AsyncIterator[dict[str, str]]

    async def run(self) -> None:
        async for event in self.events:
            if not event.get("data"):
                continue
            message = json.loads(event["data"])
            if message.get("method") == UPDATED:
                self.record(str(message["params"]["uri"]).removeprefix(URI_PREFIX))


class RawLegacyAgent(_RawAgent):
    """A legacy (2025-11-25) session: initialize, GET stream, resources/subscribe, idle."""

    async def start(self) -> None:
        pool = Pool.of(self.port, self.api_key)
        response, answer = await pool.call("POST", {
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": LEGACY_VERSION, "capabilities": {},
                "clientInfo": CLIENT_INFO}}, want_id=1)
        _result(answer, f"initialize ({response.status})")
        self.session_id = response.headers["mcp-session-id"]
        session = {"mcp-session-id": self.session_id, "mcp-protocol-version": LEGACY_VERSION}
        response, _ = await pool.call(
            "POST", {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        if response.status != 202:
            raise AgentError(f"notifications/initialized: {response.status}")
        self.get = Connection(self.port, pool.headers)
        self.stream = await self.get.request("GET", headers={
            **session, "Cache-Control": "no-store"})
        if self.stream.status != 200:
            raise AgentError(f"GET stream: {self.stream.status} {await self.stream.body()!r}")
        self.events = self.stream.events()
        first = await anext(self.events)  # the retry hint, sent at once
        if "retry" not in first:
            raise AgentError(f"GET stream opened with {first}")
        for n, cid in enumerate(self.change_ids, start=2):
            response, answer = await pool.call("POST", {
                "jsonrpc": "2.0", "id": n, "method": "resources/subscribe",
                "params": {"uri": URI_PREFIX + cid}}, session, want_id=n)
            _result(answer, f"resources/subscribe ({response.status})")
        self.session_headers = session

    def local_ports(self) -> list[int]:
        assert self.get.writer is not None
        return [int(self.get.writer.get_extra_info("sockname")[1])]

    async def close(self) -> None:
        await Pool.of(self.port, self.api_key).call("DELETE", None, self.session_headers)
        self.get.close()


class RawModernAgent(_RawAgent):
    """A modern (2026-07-28) listener: server/discover, then one subscriptions/listen."""

    async def start(self) -> None:
        pool = Pool.of(self.port, self.api_key)
        headers = {"mcp-protocol-version": MODERN_VERSION}
        response, answer = await pool.call("POST", {
            "jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": {"_meta": MODERN_META}}, {**headers, "mcp-method": "server/discover"},
            want_id=1)
        _result(answer, f"server/discover ({response.status})")
        uris = [URI_PREFIX + cid for cid in self.change_ids]
        self.conn = Connection(self.port, pool.headers)
        self.stream = await self.conn.request("POST", {
            "jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
            "params": {"notifications": {"resourceSubscriptions": uris},
                       "_meta": MODERN_META}},
            {**headers, "mcp-method": "subscriptions/listen"})
        if self.stream.status != 200:
            raise AgentError(f"listen: {self.stream.status} {await self.stream.body()!r}")
        self.events = self.stream.events()
        first = await anext(self.events)
        while not first.get("data"):  # a priming event, if the server sends one
            first = await anext(self.events)
        ack = json.loads(first["data"])
        honored = ack["params"]["notifications"].get("resourceSubscriptions") or []
        if len(honored) != len(uris):
            raise AgentError(f"listen honored {len(honored)} of {len(uris)}: {ack}")

    def local_ports(self) -> list[int]:
        assert self.conn.writer is not None
        return [int(self.conn.writer.get_extra_info("sockname")[1])]

    async def close(self) -> None:
        self.conn.close()


__all__ = ["RawLegacyAgent", "RawModernAgent", "Record"]
