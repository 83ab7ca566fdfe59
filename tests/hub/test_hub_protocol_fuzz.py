"""Properties of the pure SignalR protocol code under generated garbage: framing, parsing,
handshakes, negotiate versions and SSE events either work or raise ProtocolError."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from colaflow_mcp.hub import protocol as p
from tests.fuzz import JSON_VALUES, SCALARS, fuzz_settings

RS = p.RS
FIELDS = ["type", "target", "arguments", "invocationId", "streamIds", "result", "error",
          "sequenceId", "allowReconnect", "headers", "item", "protocol", "version"]


def texts() -> st.SearchStrategy[str]:
    """Arbitrary text with record separators sprinkled in, JSON garbage and near-messages."""
    near = st.dictionaries(st.sampled_from(FIELDS), st.one_of(
        st.integers(0, 10), JSON_VALUES), max_size=5).map(json.dumps)
    near_typed = st.builds(lambda t, rest: json.dumps({"type": t, **rest}),
                           st.one_of(st.integers(-1, 10), SCALARS),
                           st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4))
    deep = st.integers(1, 5000).map(lambda n: "[" * n + "]" * n)
    return st.one_of(st.text(alphabet=st.characters(codec="utf-8") | st.just(RS)),
                     JSON_VALUES.map(lambda v: json.dumps(v)), near, near_typed, deep)


def read_all(reader: p.FrameReader, chunks: list[str]) -> list[str] | str:
    """Messages from feeding ``chunks`` in order, or the ProtocolError's text."""
    out: list[str] = []
    try:
        for chunk in chunks:
            out.extend(reader.feed(chunk))
    except p.MessageTooLarge as exc:
        return str(exc)
    return out


@fuzz_settings(200)
@given(pieces=st.lists(texts(), max_size=6), cuts=st.lists(st.integers(0, 400), max_size=8),
       limit=st.sampled_from([8, 64, 1024, 32 * 1024]))
def test_framing_does_not_depend_on_how_the_stream_is_cut(
    pieces: list[str], cuts: list[int], limit: int
) -> None:
    stream = RS.join(pieces)
    bounds = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    whole = read_all(p.FrameReader(limit), [stream])
    assert read_all(p.FrameReader(limit), chunks) == whole
    if isinstance(whole, list):
        assert whole == stream.split(RS)[:-1]
        assert all(len(m.encode()) <= limit for m in whole)


@fuzz_settings(300)
@given(text=texts())
def test_any_message_parses_or_raises_protocol_error(text: str) -> None:
    try:
        message = p.parse_message(text)
    except p.ProtocolError:
        return
    if isinstance(message, p.Invocation):
        assert isinstance(message.target, str) and message.target
        assert isinstance(message.arguments, list)
    if isinstance(message, p.Invocation | p.Completion | p.Unsupported):
        iid = message.invocation_id
        assert iid is None or (isinstance(iid, str) and len(iid) <= p.MAX_INVOCATION_ID_LENGTH)
    if isinstance(message, p.Ack | p.Sequence):
        assert message.sequence_id >= 0


@fuzz_settings(200)
@given(text=st.one_of(texts(), st.builds(
    lambda proto, version: json.dumps({"protocol": proto, "version": version}),
    st.one_of(st.sampled_from(["json", "messagepack"]), JSON_VALUES),
    st.one_of(st.integers(), JSON_VALUES))))
def test_any_handshake_is_accepted_refused_or_a_protocol_error(text: str) -> None:
    try:
        request = p.parse_handshake(text)
    except p.ProtocolError:
        return
    reason = p.handshake_error(request)
    answer = json.loads(p.handshake_response(reason).rstrip(RS))
    assert answer == ({"error": reason} if reason else {})
    if reason is None:
        assert request.protocol == "json" and 0 <= request.version <= p.MAX_PROTOCOL_VERSION


@fuzz_settings(200)
@given(raw=st.one_of(st.none(), st.text(max_size=30), st.integers().map(str)))
def test_negotiate_version_is_0_or_1_or_a_protocol_error(raw: str | None) -> None:
    try:
        version = p.negotiate_version(raw)
    except p.ProtocolError:
        return
    assert version in (0, 1)


@fuzz_settings(200)
@given(text=st.text())
def test_sse_event_carries_any_text_in_data_lines(text: str) -> None:
    event = p.sse_event(text).decode("utf-8")
    assert event.endswith("\r\n\r\n")
    lines = event[:-4].split("\r\n")
    assert all(line.startswith("data: ") for line in lines)
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert "\n".join(line[len("data: "):] for line in lines) == normalized


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@fuzz_settings(200)
@given(target=st.text(min_size=1), arguments=st.lists(JSON_VALUES.filter(_finite), max_size=4),
       invocation_id=st.one_of(st.none(), st.text(max_size=p.MAX_INVOCATION_ID_LENGTH)))
def test_what_the_server_frames_parses_back_to_itself(
    target: str, arguments: list[Any], invocation_id: str | None
) -> None:
    framed = p.invocation(target, arguments, invocation_id)
    [text] = p.FrameReader(1 << 30).feed(framed)
    assert p.parse_message(text) == p.Invocation(target, arguments, invocation_id)
