"""SignalR JSON hub protocol and negotiate bodies: pure functions over text, no I/O.

Specs: ``HubProtocol.md`` and ``TransportProtocols.md`` of ASP.NET Core SignalR. Messages are
JSON objects, each terminated by the record separator ``0x1E``; one transport message may
hold several of them, or part of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

RS = "\x1e"

SUPPORTED_PROTOCOL = "json"
# ASP.NET Core accepts any version up to its own (2); some clients (signalrcore) send 0.
MAX_PROTOCOL_VERSION = 2
MAX_NEGOTIATE_VERSION = 1
MAX_INVOCATION_ID_LENGTH = 256

TRANSPORTS: list[dict[str, Any]] = [
    {"transport": "WebSockets", "transferFormats": ["Text"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text"]},
]


class MessageType(IntEnum):
    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class ProtocolError(Exception):
    """The peer broke the protocol; the connection should be closed with this message."""


class MessageTooLarge(ProtocolError):
    """One message is larger than the configured maximum."""


# -- framing ----------------------------------------------------------------------------


class FrameReader:
    """Splits incoming text into complete messages; keeps a partial tail between feeds."""

    __slots__ = ("max_message_bytes", "_tail")  # one per connection

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._tail = ""

    @property
    def pending(self) -> int:
        """Characters buffered of a message not yet terminated."""
        return len(self._tail)

    def feed(self, text: str) -> list[str]:
        """Complete messages (without separators) found so far, in order."""
        data = self._tail + text if self._tail else text
        parts = data.split(RS)
        self._tail = parts.pop()
        for part in parts:
            # Characters never outnumber UTF-8 bytes; encode only when it could matter.
            n, limit = len(part), self.max_message_bytes
            if n > limit or (n * 4 > limit and len(part.encode("utf-8")) > limit):
                raise MessageTooLarge(self._too_large())
        if len(self._tail) > self.max_message_bytes:
            raise MessageTooLarge(self._too_large())
        return parts

    def _too_large(self) -> str:
        return f"message exceeds the maximum size of {self.max_message_bytes} bytes"


def frame(message: dict[str, Any]) -> str:
    """One message as JSON text with its record separator."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False) + RS


def wire_size(text: str) -> int:
    """Bytes ``text`` takes as UTF-8 (``isascii`` is O(1): the common case encodes nothing)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _load(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("message is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError("message is not a JSON object")
    return value


# -- handshake --------------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeRequest:
    protocol: str
    version: int


def parse_handshake(text: str) -> HandshakeRequest:
    """The client's first message; raises ProtocolError if it is not a handshake."""
    data = _load(text)
    protocol, version = data.get("protocol"), data.get("version")
    if not isinstance(protocol, str) or not isinstance(version, int) or isinstance(
        version, bool
    ):
        raise ProtocolError("handshake request must have a string 'protocol' and int 'version'")
    return HandshakeRequest(protocol=protocol, version=version)


def handshake_error(request: HandshakeRequest) -> str | None:
    """Why this handshake is refused, or None if it is accepted."""
    if request.protocol != SUPPORTED_PROTOCOL:
        return f"Requested protocol '{request.protocol}' is not available."
    if not 0 <= request.version <= MAX_PROTOCOL_VERSION:
        return (
            f"The server does not support version {request.version} of the "
            f"'{request.protocol}' protocol."
        )
    return None


def handshake_response(error: str | None = None) -> str:
    """``{}`` on success, ``{"error": …}`` on refusal, with the separator."""
    return frame({"error": error} if error else {})


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: list[str] | None = None


@dataclass(frozen=True)
class Completion:
    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Close:
    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True)
class Ack:
    sequence_id: int


@dataclass(frozen=True)
class Sequence:
    sequence_id: int


@dataclass(frozen=True)
class Unsupported:
    """A streaming message (StreamItem, StreamInvocation, CancelInvocation): not offered."""

    type: int
    invocation_id: str | None = None
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Message = Invocation | Completion | Ping | Close | Ack | Sequence | Unsupported


def _invocation_id(data: dict[str, Any], required: bool) -> str | None:
    value = data.get("invocationId")
    if value is None:
        if required:
            raise ProtocolError("missing 'invocationId'")
        return None
    if not isinstance(value, str):
        raise ProtocolError("'invocationId' must be a string")
    if len(value) > MAX_INVOCATION_ID_LENGTH:
        raise ProtocolError("'invocationId' is too long")
    return value


def _sequence_id(data: dict[str, Any]) -> int:
    value = data.get("sequenceId")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("'sequenceId' must be a non-negative integer")
    return value


def parse_message(text: str) -> Message:
    """One hub message (without its separator); raises ProtocolError if malformed."""
    data = _load(text)
    kind = data.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ProtocolError("missing or invalid 'type'")
    if kind == MessageType.INVOCATION:
        target, arguments = data.get("target"), data.get("arguments", [])
        if not isinstance(target, str) or not target:
            raise ProtocolError("invocation without a 'target'")
        if not isinstance(arguments, list):
            raise ProtocolError("'arguments' must be an array")
        stream_ids = data.get("streamIds")
        if stream_ids is not None and not isinstance(stream_ids, list):
            raise ProtocolError("'streamIds' must be an array")
        return Invocation(
            target=target, arguments=arguments,
            invocation_id=_invocation_id(data, required=False),
            stream_ids=[str(s) for s in stream_ids] if stream_ids else None,
        )
    if kind == MessageType.COMPLETION:
        if "result" in data and "error" in data:
            raise ProtocolError("completion with both 'result' and 'error'")
        error = data.get("error")
        return Completion(
            invocation_id=_invocation_id(data, required=True) or "",
            result=data.get("result"), error=None if error is None else str(error),
            has_result="result" in data,
        )
    if kind == MessageType.PING:
        return Ping()
    if kind == MessageType.CLOSE:
        error = data.get("error")
        return Close(
            error=None if error is None else str(error),
            allow_reconnect=bool(data.get("allowReconnect", False)),
        )
    if kind == MessageType.ACK:
        return Ack(_sequence_id(data))
    if kind == MessageType.SEQUENCE:
        return Sequence(_sequence_id(data))
    if kind in (
        MessageType.STREAM_ITEM, MessageType.STREAM_INVOCATION, MessageType.CANCEL_INVOCATION
    ):
        target = data.get("target")
        return Unsupported(
            type=kind, invocation_id=_invocation_id(data, required=False),
            target=target if isinstance(target, str) else None,
        )
    raise ProtocolError(f"unknown message type {kind}")


def invocation(target: str, arguments: list[Any], invocation_id: str | None = None) -> str:
    """A server-to-client invocation (events are non-blocking: no invocation id)."""
    message: dict[str, Any] = {"type": MessageType.INVOCATION.value, "target": target,
                               "arguments": arguments}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return frame(message)


def completion_result(invocation_id: str, result: Any = None) -> str:
    """A successful completion; ``result`` is omitted when None (a void method)."""
    message: dict[str, Any] = {"type": MessageType.COMPLETION.value,
                               "invocationId": invocation_id}
    if result is not None:
        message["result"] = result
    return frame(message)


def completion_error(invocation_id: str, error: str) -> str:
    return frame({"type": MessageType.COMPLETION.value, "invocationId": invocation_id,
                  "error": error})


PING = frame({"type": MessageType.PING.value})


def close_message(error: str | None = None, allow_reconnect: bool = False) -> str:
    message: dict[str, Any] = {"type": MessageType.CLOSE.value}
    if error:
        message["error"] = error
    if allow_reconnect:
        message["allowReconnect"] = True
    return frame(message)


def ack_message(sequence_id: int) -> str:
    return frame({"type": MessageType.ACK.value, "sequenceId": sequence_id})


def sequence_message(sequence_id: int) -> str:
    return frame({"type": MessageType.SEQUENCE.value, "sequenceId": sequence_id})


# -- negotiate --------------------------------------------------------------------------


def negotiate_version(raw: str | None) -> int:
    """The version to answer with: the client's, capped at ours; absent means 0."""
    if raw is None or raw == "":
        return 0
    try:
        requested = int(raw)
    except ValueError as exc:
        raise ProtocolError("negotiateVersion must be an integer") from exc
    if requested < 0:
        raise ProtocolError("negotiateVersion must not be negative")
    return min(requested, MAX_NEGOTIATE_VERSION)


def negotiate_response(
    version: int, connection_id: str, connection_token: str, stateful_reconnect: bool = False
) -> dict[str, Any]:
    """The negotiate body; version 0 has no token (the connection id is the secret)."""
    body: dict[str, Any] = {"negotiateVersion": version, "connectionId": connection_id}
    if version >= 1:
        body["connectionToken"] = connection_token
    if stateful_reconnect:
        body["useStatefulReconnect"] = True
    body["availableTransports"] = [dict(t) for t in TRANSPORTS]
    return body


def sse_event(text: str) -> bytes:
    """One Server-Sent Event carrying ``text`` (one ``data:`` line per line of text)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return ("".join(f"data: {line}\r\n" for line in lines) + "\r\n").encode("utf-8")
