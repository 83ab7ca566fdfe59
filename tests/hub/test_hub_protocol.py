"""Pure protocol tests: framing, handshake, message parsing, negotiate bodies. No sockets."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from colaflow_mcp.delivery.events import DecisionEvent
from colaflow_mcp.domain.auth import Principal
from colaflow_mcp.hub import protocol as p
from colaflow_mcp.hub.connection import ConnectionState, HubConnection, HubError
from colaflow_mcp.hub.outbound import Limits

RS = p.RS


# -- framing ---------------------------------------------------------------------------


def test_reader_splits_several_messages_in_one_buffer() -> None:
    reader = p.FrameReader(1024)
    assert reader.feed('{"a":1}' + RS + '{"b":2}' + RS) == ['{"a":1}', '{"b":2}']
    assert reader.pending == 0


def test_reader_keeps_a_partial_message_until_its_separator() -> None:
    reader = p.FrameReader(1024)
    assert reader.feed('{"type":') == []
    assert reader.feed("6}" + RS + '{"ty') == ['{"type":6}']
    assert reader.pending == 4
    assert reader.feed('pe":6}' + RS) == ['{"type":6}']


def test_reader_refuses_a_message_over_the_limit_even_unterminated() -> None:
    with pytest.raises(p.MessageTooLarge):
        p.FrameReader(16).feed("x" * 17)
    with pytest.raises(p.MessageTooLarge):
        p.FrameReader(16).feed("x" * 17 + RS)
    assert p.FrameReader(16).feed("x" * 16 + RS) == ["x" * 16]


def test_reader_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(p.MessageTooLarge):
        p.FrameReader(10).feed("é" * 6 + RS)  # 12 bytes


def test_frame_is_compact_json_with_separator() -> None:
    assert p.frame({"type": 6}) == '{"type":6}' + RS
    assert p.PING == '{"type":6}' + RS


# -- handshake -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2])
def test_json_handshake_versions_are_accepted(version: int) -> None:
    request = p.parse_handshake(json.dumps({"protocol": "json", "version": version}))
    assert p.handshake_error(request) is None
    assert p.handshake_response() == "{}" + RS


def test_messagepack_and_unknown_protocols_are_refused() -> None:
    for name in ("messagepack", "blazorpack", "xml"):
        error = p.handshake_error(p.HandshakeRequest(name, 1))
        assert error == f"Requested protocol '{name}' is not available."
    assert "version 3" in (p.handshake_error(p.HandshakeRequest("json", 3)) or "")
    assert json.loads(p.handshake_response("nope").rstrip(RS)) == {"error": "nope"}


@pytest.mark.parametrize(
    "text",
    ["", "null", "[]", '{"protocol":"json"}', '{"protocol":1,"version":1}',
     '{"protocol":"json","version":"1"}', '{"protocol":"json","version":true}', "{bad"],
)
def test_malformed_handshakes_raise_protocol_error(text: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_handshake(text)



def test_the_client_side_handshake_is_what_the_server_side_accepts() -> None:
    # The reviewer CLI's `changes watch` speaks to the hub with these.
    request = p.handshake_request()
    assert request.endswith(RS)
    parsed = p.parse_handshake(request[:-1])
    assert parsed == p.HandshakeRequest("json", 1) and p.handshake_error(parsed) is None
    assert p.parse_handshake_response(p.handshake_response()[:-1]) is None
    refused = p.handshake_response("Requested protocol 'x' is not available.")[:-1]
    assert p.parse_handshake_response(refused) == "Requested protocol 'x' is not available."
    with pytest.raises(p.ProtocolError):
        p.parse_handshake_response(p.PING[:-1])  # a hub message is not an answer
    with pytest.raises(p.ProtocolError):
        p.parse_handshake_response("[]")

# -- messages --------------------------------------------------------------------------


def test_invocation_with_and_without_id() -> None:
    m = p.parse_message('{"type":1,"invocationId":"9","target":"T","arguments":[1,"a"]}')
    assert m == p.Invocation(target="T", arguments=[1, "a"], invocation_id="9")
    m = p.parse_message('{"type":1,"target":"T","arguments":[],"headers":{"x":"y"}}')
    assert isinstance(m, p.Invocation) and m.invocation_id is None


def test_streaming_messages_parse_as_unsupported() -> None:
    for kind in (2, 4, 5):
        m = p.parse_message(json.dumps({"type": kind, "invocationId": "1", "target": "T",
                                        "arguments": [], "item": 1}))
        assert isinstance(m, p.Unsupported) and m.type == kind and m.invocation_id == "1"


def test_ping_close_ack_sequence_and_completion_parse() -> None:
    assert p.parse_message('{"type":6}') == p.Ping()
    assert p.parse_message('{"type":7,"error":"e","allowReconnect":true}') == p.Close("e", True)
    assert p.parse_message('{"type":8,"sequenceId":3}') == p.Ack(3)
    assert p.parse_message('{"type":9,"sequenceId":1}') == p.Sequence(1)
    c = p.parse_message('{"type":3,"invocationId":"1","result":null}')
    assert isinstance(c, p.Completion) and c.has_result


@pytest.mark.parametrize(
    "text",
    ['{"type":0}', '{"type":10}', '{"type":"1"}', "{}", "[1]", '{"type":1,"arguments":[]}',
     '{"type":1,"target":"T","arguments":{}}', '{"type":1,"target":"T","invocationId":5}',
     '{"type":3,"invocationId":"1","result":1,"error":"x"}', '{"type":3}',
     '{"type":8}', '{"type":9,"sequenceId":-1}',
     '{"type":1,"target":"T","arguments":[],"invocationId":"' + "x" * 300 + '"}'],
)
def test_malformed_messages_raise_protocol_error(text: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_message(text)


def test_server_messages_encode_as_the_spec_shows() -> None:
    def load(text: str) -> Any:
        assert text.endswith(RS)
        return json.loads(text[:-1])

    assert load(p.invocation("PendingChangeApproved", [{"a": 1}])) == {
        "type": 1, "target": "PendingChangeApproved", "arguments": [{"a": 1}]}
    assert load(p.completion_result("1", {"x": 1})) == {
        "type": 3, "invocationId": "1", "result": {"x": 1}}
    assert load(p.completion_result("1")) == {"type": 3, "invocationId": "1"}
    assert load(p.completion_error("1", "bad")) == {"type": 3, "invocationId": "1",
                                                     "error": "bad"}
    assert load(p.close_message()) == {"type": 7}
    assert load(p.close_message("bye", allow_reconnect=True)) == {
        "type": 7, "error": "bye", "allowReconnect": True}


# -- negotiate -------------------------------------------------------------------------


def test_negotiate_version_rules() -> None:
    assert p.negotiate_version(None) == 0
    assert p.negotiate_version("0") == 0
    assert p.negotiate_version("1") == 1
    assert p.negotiate_version("7") == 1
    for bad in ("x", "-1"):
        with pytest.raises(p.ProtocolError):
            p.negotiate_version(bad)


def test_negotiate_bodies() -> None:
    v1 = p.negotiate_response(1, "cid", "secret")
    assert v1["connectionToken"] == "secret" and v1["connectionId"] == "cid"
    assert v1["negotiateVersion"] == 1
    v0 = p.negotiate_response(0, "cid", "secret")
    assert "connectionToken" not in v0 and v0["negotiateVersion"] == 0
    assert [t["transport"] for t in v0["availableTransports"]] == [
        "WebSockets", "ServerSentEvents", "LongPolling"]
    assert "useStatefulReconnect" not in v1
    assert p.negotiate_response(1, "c", "s", stateful_reconnect=True)["useStatefulReconnect"]


def test_sse_event_puts_each_line_in_a_data_field() -> None:
    assert p.sse_event('{"type":6}' + RS) == ('data: {"type":6}' + RS + "\r\n\r\n").encode()
    assert p.sse_event("a\nb") == b"data: a\r\ndata: b\r\n\r\n"


# -- connection state machine (no transport) -------------------------------------------


class FakeHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.closed_conns: list[HubConnection] = []

    async def invoke(self, conn: HubConnection, target: str, arguments: list[Any]) -> Any:
        self.calls.append((target, arguments))
        if target == "Fail":
            raise HubError("it failed")
        if target == "Boom":
            raise RuntimeError("secret detail")
        if target == "Decided":
            conn.deliver(DecisionEvent("c1", "t1", "Rejected", {"pendingChangeId": "c1"}))
        return {"ok": True}

    def closed(self, conn: HubConnection) -> None:
        self.closed_conns.append(conn)


def make_conn(queue: int = 8) -> tuple[HubConnection, FakeHub]:
    hub = FakeHub()
    conn = HubConnection(
        connection_id="c", token="t", hub=hub,
        principal=Principal(kind="agent", tenant_id="t1", tenant_slug="t", api_key_id="k"),
        limits=Limits(max_message_bytes=1024, outbound_queue_size=queue),
    )
    conn.attach_socket()  # a WebSocket, generation 1
    return conn, hub


def sent(conn: HubConnection) -> list[Any]:
    return [json.loads(t[:-1]) for t in conn.take()]


@pytest.mark.anyio
async def test_connection_goes_handshaking_connected_closed() -> None:
    conn, hub = make_conn()
    assert conn.state is ConnectionState.HANDSHAKING
    await conn.receive('{"protocol":"json","version":1}' + RS)
    assert conn.state is ConnectionState.CONNECTED and sent(conn) == [{}]
    await conn.receive('{"type":7}' + RS)
    assert conn.closed and hub.closed_conns == [conn]
    assert sent(conn) == [{"type": 7}]


@pytest.mark.anyio
async def test_completion_precedes_events_raised_during_the_invocation() -> None:
    conn, _ = make_conn()
    await conn.receive('{"protocol":"json","version":1}' + RS)
    conn.take()
    await conn.receive('{"type":1,"invocationId":"1","target":"Decided","arguments":[]}' + RS)
    first, second = sent(conn)
    assert first == {"type": 3, "invocationId": "1", "result": {"ok": True}}
    assert second["target"] == "PendingChangeRejected"


@pytest.mark.anyio
async def test_errors_become_completion_errors_without_internal_details() -> None:
    conn, _ = make_conn()
    await conn.receive('{"protocol":"json","version":1}' + RS)
    conn.take()
    await conn.receive('{"type":1,"invocationId":"1","target":"Fail","arguments":[]}' + RS
                       + '{"type":1,"invocationId":"2","target":"Boom","arguments":[]}' + RS
                       + '{"type":1,"target":"Fail","arguments":[]}' + RS)
    one, two = sent(conn)
    assert one["error"] == "it failed"
    assert "secret" not in two["error"] and "unexpected error" in two["error"]


@pytest.mark.anyio
async def test_full_queue_closes_the_connection() -> None:
    conn, hub = make_conn(queue=3)
    await conn.receive('{"protocol":"json","version":1}' + RS)
    for _ in range(5):
        conn.send(p.PING)
    assert conn.closed and hub.closed_conns == [conn]
    # The client is not reading: what was queued is dropped, the Close says why.
    [close] = sent(conn)
    assert close["type"] == 7 and close["allowReconnect"]
    assert "more than 3 messages queued" in close["error"]


@pytest.mark.anyio
async def test_timers_ping_then_time_out() -> None:
    conn, _ = make_conn()
    await conn.receive('{"protocol":"json","version":1}' + RS)
    conn.take()
    t0 = conn.last_received
    timers = {"keep_alive": 1.0, "client_timeout": 3.0, "handshake_timeout": 1.0,
              "disconnect_timeout": 1.0}
    conn.tick(t0 + 0.5, **timers)
    assert conn.take() == []
    conn.tick(t0 + 1.5, **timers)
    assert conn.take() == [p.PING]
    conn.tick(t0 + 3.5, **timers)
    assert conn.closed and "timeout" in (conn.close_error or "")


@pytest.mark.anyio
async def test_handshake_timeout_answers_with_an_error() -> None:
    conn, _ = make_conn()
    conn.tick(conn.created_at + 2, keep_alive=1, client_timeout=9, handshake_timeout=1,
              disconnect_timeout=9)
    assert conn.closed
    [answer] = sent(conn)
    assert "handshake" in answer["error"]


@pytest.mark.anyio
async def test_wait_outbound_wakes_on_send_and_close() -> None:
    conn, _ = make_conn()
    await conn.receive('{"protocol":"json","version":1}' + RS)
    conn.take()
    async with anyio.create_task_group() as tg:
        woke = anyio.Event()

        async def waiter() -> None:
            await conn.wait_outbound()
            woke.set()

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        conn.send(p.PING)
        with anyio.fail_after(1):
            await woke.wait()


@pytest.mark.anyio
async def test_stateful_connection_replays_unacked_messages_after_resume() -> None:
    conn, _ = make_conn()
    conn.stateful_allowed = True
    await conn.receive('{"protocol":"json","version":2}' + RS)
    assert conn.stateful
    conn.take()
    for _ in range(3):
        await conn.receive('{"type":1,"invocationId":"x","target":"T","arguments":[]}' + RS)
    assert len(sent(conn)) == 3
    await conn.receive('{"type":8,"sequenceId":2}' + RS)  # the client has the first two
    conn.detach_socket(1, may_resume=True)  # the socket dropped: the connection waits
    assert not conn.closed
    conn.deliver(DecisionEvent("c1", "t1", "Approved", {"pendingChangeId": "c1"}))
    assert conn.attach_socket() == (2, True)  # the client is back on a new socket
    conn.resume()
    replay = sent(conn)
    assert replay[0] == {"type": 9, "sequenceId": 3}
    assert [m["type"] for m in replay[1:]] == [3, 1]


@pytest.mark.anyio
async def test_stateful_connection_ignores_replayed_client_messages() -> None:
    conn, hub = make_conn()
    conn.stateful_allowed = True
    await conn.receive('{"protocol":"json","version":2}' + RS)
    call = '{"type":1,"invocationId":"%s","target":"T","arguments":[]}' + RS
    await conn.receive(call % "1" + call % "2")
    assert len(hub.calls) == 2
    # After a reconnect the client restarts at its first unacknowledged message (1).
    await conn.receive('{"type":9,"sequenceId":1}' + RS + call % "1" + call % "2" + call % "3")
    assert len(hub.calls) == 3
    conn.detach_socket(1, may_resume=True)  # no socket: nothing to ack on
    conn.tick(time.monotonic(), keep_alive=99, client_timeout=99, handshake_timeout=99,
              disconnect_timeout=99)
    conn.attach_socket()
    conn.tick(time.monotonic(), keep_alive=99, client_timeout=99, handshake_timeout=99,
              disconnect_timeout=99)
    assert {"type": 8, "sequenceId": 3} in sent(conn)


@pytest.mark.anyio
async def test_version_2_without_negotiated_stateful_reconnect_is_plain() -> None:
    conn, hub = make_conn()
    await conn.receive('{"protocol":"json","version":2}' + RS)
    assert not conn.stateful
    await conn.receive('{"type":9,"sequenceId":1}' + RS
                       + '{"type":1,"target":"T","arguments":[]}' + RS)
    assert len(hub.calls) == 1
