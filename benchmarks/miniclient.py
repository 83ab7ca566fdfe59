"""A minimal keep-alive HTTP/1.1 client over asyncio streams.

The load generator must not be the bottleneck on a 2-core machine, and the polling scenario
counts bytes exactly; a few dozen lines of HTTP/1.1 do both better than a general client.
Only what ``colaflow-mcp`` answers is supported: ``Content-Length`` bodies, keep-alive.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HttpError(Exception):
    """The server answered with an unexpected status or closed the connection."""


class MiniHttp:
    """One persistent connection; requests on it are sequential."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = headers or {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    @property
    def local_port(self) -> int | None:
        if self._writer is None:
            return None
        port: int = self._writer.get_extra_info("sockname")[1]
        return port

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read its whole response: ``(status, body)``."""
        if self._writer is None or self._writer.is_closing():
            await self.connect()
        assert self._reader is not None and self._writer is not None
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        self._writer.write(raw)
        self.bytes_sent += len(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self._reader.readexactly(length) if length else b""
        self.bytes_received += len(head) + len(data)
        return status, data

    async def json(self, method: str, path: str, body: Any = None,
                   expect: int = 200) -> Any:
        status, data = await self.request(method, path, body)
        if status != expect:
            raise HttpError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None
