"""A hub connection for ``changes watch``: one WebSocket (no negotiation), the JSON hub
protocol from ``hub.protocol``, keep-alive pings both ways, and the review queue.

The reviewer token goes in the ``Authorization`` header, never in the URL.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from colaflow_mcp.hub import protocol as p
from colaflow_mcp.reviewer_cli.api import CliError, Target

# What the CLI accepts from the server in one message (the queue snapshot can be large).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ConnectionLost(Exception):
    """The connection ended or could not be made; watching may go on after a reconnect."""


@dataclass(frozen=True)
class Timing:
    """The client's keep-alive: its own ping interval, and the server silence after
    which the connection counts as dead (the server pings every 15 s by default)."""

    ping_seconds: float
    silence_seconds: float
    open_seconds: float


class QueueConnection:
    """One connected hub client: invoke methods, then read events."""

    def __init__(self, ws: ClientConnection, timing: Timing) -> None:
        self.ws = ws
        self.timing = timing
        self._reader = p.FrameReader(MAX_MESSAGE_BYTES)
        self._ids = itertools.count(1)
        self._held: list[p.Invocation] = []  # events that came before a completion

    async def invoke(self, target: str, *arguments: Any) -> Any:
        """Call a hub method and return its result; CliError if the hub refuses it."""
        invocation_id = str(next(self._ids))
        await self._send(p.invocation(target, list(arguments), invocation_id))
        while True:
            message = await self._next()
            if isinstance(message, p.Completion) and message.invocation_id == invocation_id:
                if message.error is not None:
                    raise CliError(f"the hub refused {target}: {message.error}")
                return message.result
            if isinstance(message, p.Invocation):
                self._held.append(message)

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event name, payload) of every event, until the connection ends
        (ConnectionLost)."""
        while True:
            if self._held:
                message: p.Message = self._held.pop(0)
            else:
                message = await self._next()
            if isinstance(message, p.Invocation) and message.arguments and isinstance(
                    message.arguments[0], dict):
                yield message.target, message.arguments[0]

    async def _send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except WebSocketException as exc:
            raise ConnectionLost(f"send failed ({type(exc).__name__})") from None

    async def _next(self) -> p.Message:
        """The next hub message (pings consumed; a Close ends the connection)."""
        while True:
            for raw in await self._frames():
                message = p.parse_message(raw)
                if isinstance(message, p.Close):
                    if message.allow_reconnect:
                        raise ConnectionLost(f"closed by the server: {message.error or 'bye'}")
                    raise CliError(f"the server closed the connection: {message.error}")
                if not isinstance(message, p.Ping):
                    return message

    async def _frames(self) -> list[str]:
        """The complete frames of the next WebSocket message (perhaps none)."""
        with anyio.move_on_after(self.timing.silence_seconds) as silence:
            try:
                data = await self.ws.recv()
            except WebSocketException as exc:
                raise ConnectionLost(f"connection lost ({type(exc).__name__})") from None
        if silence.cancelled_caught:
            raise ConnectionLost(f"no word from the server for {self.timing.silence_seconds:g} s")
        return self._reader.feed(data if isinstance(data, str) else data.decode("utf-8"))

    async def ping_forever(self) -> None:
        """Keep-alive pings (the server closes a client silent for 30 s)."""
        while True:
            await anyio.sleep(self.timing.ping_seconds)
            try:
                await self.ws.send(p.PING)
            except WebSocketException:
                return  # the reader notices


@asynccontextmanager
async def open_hub(target: Target, timing: Timing) -> AsyncIterator[QueueConnection]:
    """A handshaken hub connection with its pinger running; ConnectionLost if it cannot be
    made now, CliError if it never will (the token is refused)."""
    try:
        ws = await connect(target.hub_url, additional_headers=target.headers,
                           open_timeout=timing.open_seconds, max_size=MAX_MESSAGE_BYTES,
                           ping_interval=None)
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise CliError("the hub refused the token (missing, invalid or expired): pass a "
                           "reviewer token with --token or COLAFLOW_TOKEN") from None
        raise ConnectionLost(f"the hub answered HTTP {status}") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectionLost(f"cannot connect ({type(exc).__name__})") from None
    try:
        conn = QueueConnection(ws, timing)
        await conn._send(p.handshake_request())
        frames: list[str] = []
        while not frames:
            frames = await conn._frames()
        answer, *rest = frames
        error = p.parse_handshake_response(answer)
        if error is not None:
            raise CliError(f"the hub refused the handshake: {error}")
        conn._held = [m for m in map(p.parse_message, rest) if isinstance(m, p.Invocation)]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.ping_forever)
                try:
                    yield conn
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the caller's error, not a group of one
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    except p.ProtocolError as exc:
        raise ConnectionLost(f"protocol error: {exc}") from None
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await ws.close()
