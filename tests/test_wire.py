"""Framing (mini / full headers, sub-message lists) and the sans-IO channel connection."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto.channel import ChannelConnection, PongReceived
from spiceserver.proto.enums import ChannelType
from spiceserver.proto.messages import base as bm
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages.base import CLIENT, SERVER
from spiceserver.proto.wire import FULL_HEADER, Framer, RawMessage, encode_sub_list, frame


def test_mini_and_full_headers() -> None:
    assert frame(101, b"ab", mini=True) == struct.pack("<HI", 101, 2) + b"ab"
    assert frame(101, b"ab", mini=False, serial=7) == struct.pack("<QHII", 7, 101, 2, 0) + b"ab"


def test_framer_split_anywhere() -> None:
    stream = frame(1, b"x", mini=True) + frame(2, b"", mini=True) + frame(3, b"yz" * 100, mini=True)
    for cut in range(len(stream)):
        f = Framer(mini=True)
        got = f.feed(stream[:cut]) + f.feed(stream[cut:])
        assert got == [RawMessage(1, b"x"), RawMessage(2, b""), RawMessage(3, b"yz" * 100)]


def test_framer_limit_before_buffering() -> None:
    f = Framer(mini=True, max_size=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        f.feed(struct.pack("<HI", 101, 101))
    assert f.buffered == 6  # only the header was held


def test_sub_message_lists() -> None:
    lst = encode_sub_list([(105, b"inval"), (5, b"\0")])
    f = Framer(mini=True)
    assert f.feed(frame(8, lst, mini=True)) == [RawMessage(105, b"inval"), RawMessage(5, b"\0")]
    body = b"MAIN" + encode_sub_list([(105, b"inval"), (5, b"\0")], base=4)
    full = FULL_HEADER.pack(9, 302, len(body), 4) + body
    got = Framer(mini=False).feed(full)
    assert got == [RawMessage(105, b"inval", 9), RawMessage(5, b"\0", 9), RawMessage(302, b"MAIN", 9)]


def pair(mini: bool = True) -> tuple[ChannelConnection, ChannelConnection]:
    return (
        ChannelConnection(ChannelType.INPUTS, SERVER, mini_header=mini),
        ChannelConnection(ChannelType.INPUTS, CLIENT, mini_header=mini),
    )


@pytest.mark.parametrize("mini", [True, False])
def test_ack_window_and_ping_pong(mini: bool) -> None:
    server, client = pair(mini)
    server.set_ack_window(2)
    for _ in range(6):
        server.send(im.MouseMotionAck())
    assert not server.can_send  # 6 unacked > 2 * 2
    got = client.receive_data(server.data_to_send())
    assert isinstance(got[0], bm.SetAck) and len(got) == 7
    events = server.receive_data(client.data_to_send(), now=1.0)
    assert isinstance(events[0], bm.AckSync)
    assert server.unacked == 0 and server.can_send  # 3 acks of window 2 covered the 6
    pid = server.send_ping(now=2.0, size=10)
    client.receive_data(server.data_to_send())
    events = server.receive_data(client.data_to_send(), now=2.5)
    assert [type(e) for e in events] == [PongReceived]  # 6 messages since SET_ACK: 3 acks, all sent
    (pong,) = events
    assert pong == PongReceived(pid, 0.5, 10)


def test_unknown_and_short_messages_raise_protocol_error() -> None:
    server, _ = pair()
    with pytest.raises(ProtocolError, match="unknown message type"):
        server.receive_data(frame(199, b"", mini=True))
    server, _ = pair()
    with pytest.raises(ProtocolError, match="too short"):
        server.receive_data(frame(im.KeyDown.TYPE, b"\x01\x02", mini=True))


def test_trailing_bytes_accepted() -> None:
    server, _ = pair()
    (msg,) = server.receive_data(frame(im.KeyDown.TYPE, b"\x1e\0\0\0extra", mini=True))
    assert msg == im.KeyDown(code=0x1E)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(ChannelType)), st.booleans())
def test_fuzz_channel_stream(data: bytes, ctype: ChannelType, mini: bool) -> None:
    """A server-side channel fed any bytes yields messages or raises ProtocolError."""
    conn = ChannelConnection(ctype, SERVER, mini_header=mini, max_message_size=4096)
    try:
        conn.receive_data(data)
    except ProtocolError:
        pass
