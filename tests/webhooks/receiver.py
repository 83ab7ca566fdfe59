"""A real webhook receiver for tests: uvicorn on 127.0.0.1, port 0, verifying every
delivery with the ``standardwebhooks`` library and deduplicating by ``webhook-id``.

Each path is an endpoint of its own; a script per path says how to answer the next
requests (a status code, or ``"hang"``: no answer until released or the sender goes away).
"""

from __future__ import annotations

import json
import socket
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.harness import _ReadyServer

Scope = dict[str, Any]


@dataclass
class Received:
    path: str
    id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    base_url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, deque[int | str]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    processed: dict[str, Received] = field(default_factory=dict)  # deduplicated by id
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per id
    path_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    concurrent_ids: list[str] = field(default_factory=list)  # ids seen twice at once
    # The sender's connections each path was reached over (client address and port).
    connections: dict[str, set[tuple[str, int]]] = field(
        default_factory=lambda: defaultdict(set))
    release: anyio.Event = field(default_factory=anyio.Event)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def url(self, path: str) -> str:
        return self.base_url + path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, done: Callable[[], bool], within: float = 15.0) -> None:
        """Wait (woken by each request) until ``done()``."""
        with anyio.fail_after(within):
            while not done():
                await self.changed.wait()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        msg_id = headers.get("webhook-id", "")
        verified = False
        secret = self.secrets.get(path)
        if secret is not None:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        client = scope.get("client")
        if client:
            self.connections[path].add((client[0], client[1]))
        got = Received(path, msg_id, headers.get("webhook-timestamp", ""),
                       headers.get("webhook-signature", ""), body, verified)
        self.received.append(got)
        self.in_flight[msg_id] += 1
        self.path_in_flight[path] += 1
        self.most_in_flight[path] = max(self.most_in_flight[path], self.path_in_flight[path])
        if self.in_flight[msg_id] > 1:
            self.concurrent_ids.append(msg_id)
        self._notify()
        try:
            script = self.scripts[path]
            action = script.popleft() if script else 200
            if action == "hang":
                async with anyio.create_task_group() as tg:
                    async def gone() -> None:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        tg.cancel_scope.cancel()

                    tg.start_soon(gone)
                    await self.release.wait()
                    tg.cancel_scope.cancel()
                if not self.release.is_set():
                    return  # the sender went away
                action = 200
            status = int(action)
            if 200 <= status < 300 and verified:
                self.processed.setdefault(msg_id, got)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.in_flight[msg_id] -= 1
            self.path_in_flight[path] -= 1
            self._notify()


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 (a port the OS picks) until the block ends."""
    r = Receiver()
    config = uvicorn.Config(r, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=1)
    server = _ReadyServer(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    r.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                await server.ready.wait()
            try:
                yield r
            finally:
                r.release.set()
                server.should_exit = True
    finally:
        sock.close()
