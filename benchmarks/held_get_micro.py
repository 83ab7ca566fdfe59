"""What a held SSE GET costs in uvicorn's HTTP stack, against a bare asyncio protocol.

``python -m benchmarks.held_get_micro [--connections 2000] [--server uvicorn,lean]``

Issue 14's second item for the legacy session (a GET stream on a lean protocol outside
uvicorn's HTTP stack) can save at most what uvicorn keeps per held request beyond the
socket itself. This measures that bound: a server process holds N GET responses that
started an SSE stream and wait for the client to go, and the server's RSS is read before
and after (per connection). ``uvicorn``: uvicorn's httptools protocol and an ASGI app that
sends the head and one event, then awaits ``receive()`` (as ``GetStream.serve`` does).
``lean``: an ``asyncio.Protocol`` that reads the request head, writes the same bytes and
keeps only its transport (what a stream handed over after its head was parsed would
keep). Neither has our app's middleware or the session; only the connection's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

HEAD = (b"HTTP/1.1 200 OK\r\ncache-control: no-cache, no-transform\r\n"
        b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
EVENT = b"retry: 3000\r\n\r\n"
CHUNK = f"{len(EVENT):x}\r\n".encode() + EVENT + b"\r\n"
REQUEST = (b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
           b"mcp-session-id: 0123456789abcdef0123456789abcdef\r\n\r\n")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _sse_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"cache-control", b"no-cache, no-transform"),
        (b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": EVENT, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


class LeanHeld(asyncio.Protocol):
    """Reads a request head, answers with the SSE head and one event, then only holds."""

    __slots__ = ("transport", "head")

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.head: bytes | None = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.head = None
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(HEAD + CHUNK)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def serve(kind: str) -> None:
    """The server process: prints its port, serves until killed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(sock.getsockname()[1], flush=True)
    if kind == "uvicorn":
        import uvicorn
        config = uvicorn.Config(_sse_app, http="httptools", lifespan="off", log_level="warning",
                                access_log=False, backlog=4096)
        uvicorn.Server(config).run(sockets=[sock])
        return

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(LeanHeld, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


async def _hold(port: int, n: int) -> list[asyncio.StreamWriter]:
    writers = []
    for start in range(0, n, 200):
        batch = await asyncio.gather(*(_one(port) for _ in range(start, min(n, start + 200))))
        writers.extend(batch)
    return writers


async def _one(port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    got = b""
    while b"retry: 3000" not in got:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError("closed before the first event")
        got += chunk
    return writer


def measure(kind: str, n: int) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.held_get_micro", "--serve", kind],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(1.0)
        before = _rss_kib(proc.pid)

        async def run() -> int:
            writers = await _hold(port, n)
            await asyncio.sleep(2.0)  # settle
            held = _rss_kib(proc.pid)
            for writer in writers:
                writer.close()
            return held

        held = asyncio.run(run())
        return {"server": kind, "connections": n, "rss_before_kib": before,
                "rss_held_kib": held, "kib_per_connection": round((held - before) / n, 2),
                "loadavg": os.getloadavg()[0]}
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--server", default="uvicorn,lean")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for _ in range(args.rounds):
        for kind in args.server.split(","):
            print(json.dumps(measure(kind, args.connections)), flush=True)


if __name__ == "__main__":
    main()
