"""The sans-IO link state machines, server and client roles, wired back to back (no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import LinkError
from spiceserver.proto.enums import MAGIC, AuthMechanism, CommonCap, LinkErr
from spiceserver.proto.link import (
    ClientLink,
    LinkMess,
    LinkReply,
    LinkReplyReceived,
    LinkRequest,
    LinkResult,
    ServerLink,
    TicketReceived,
    caps_to_words,
    has_cap,
    words_to_caps,
)

KEY = bytes(range(162))
COMMON = caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE, CommonCap.MINI_HEADER})


def header(size: int, major: int = 2, minor: int = 2, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack("<III", major, minor, size)


def error_reply(code: int) -> bytes:
    """What libspice's reds_send_link_error writes: header + LinkReply with only ``error`` set."""
    return header(178) + struct.pack("<I", code) + bytes(174)


def test_caps_words_round_trip() -> None:
    assert caps_to_words({0, 3}) == (0x9,)
    assert caps_to_words({33}) == (0, 2)
    assert words_to_caps((0x9, 2)) == {0, 3, 33}
    assert has_cap((0x9,), 3) and not has_cap((0x9,), 1) and not has_cap((), 0)


def test_full_handshake_back_to_back() -> None:
    client = ClientLink(LinkMess(0, 1, 0, COMMON, (0x6,)))
    server = ServerLink()
    server.receive_data(client.data_to_send())
    (req,) = server.events()
    assert isinstance(req, LinkRequest)
    assert req.mess == LinkMess(0, 1, 0, COMMON, (0x6,))
    server.accept(KEY, COMMON, (0x6,))
    client.receive_data(server.data_to_send())
    (rep,) = client.events()
    assert isinstance(rep, LinkReplyReceived) and rep.reply.pub_key == KEY and rep.reply.channel_caps == (0x6,)
    client.send_ticket(b"T" * 128)
    out = client.data_to_send()
    assert out[:4] == struct.pack("<I", AuthMechanism.SPICE)
    server.receive_data(out + b"early data")
    (tk,) = server.events()
    assert tk == TicketReceived(AuthMechanism.SPICE, b"T" * 128)
    server.finish(LinkErr.OK)
    assert server.done and server.leftover() == b"early data"
    client.receive_data(server.data_to_send())
    assert client.events() == [LinkResult(LinkErr.OK)] and client.done


def test_byte_at_a_time() -> None:
    client = ClientLink(LinkMess(7, 3, 0, COMMON, ()))
    server = ServerLink()
    for b in client.data_to_send():
        server.receive_data(bytes([b]))
    assert isinstance(server.events()[0], LinkRequest)


def test_no_auth_selection_reads_ticket_directly() -> None:
    server = ServerLink()
    server.receive_data(header(18) + LinkMess(0, 1, 0).encode())
    server.events()
    server.accept(KEY, COMMON, ())
    server.receive_data(b"X" * 128)
    assert server.events() == [TicketReceived(AuthMechanism.SPICE, b"X" * 128)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET / HTTP/1.1\r\n", LinkErr.INVALID_MAGIC),
        (header(18, major=1), LinkErr.VERSION_MISMATCH),
        (header(17), LinkErr.INVALID_DATA),
        (header(4097), LinkErr.INVALID_DATA),
        (header(18 + 8) + struct.pack("<IBBIII", 0, 1, 0, 1025, 0, 18) + bytes(8), LinkErr.INVALID_DATA),
        (header(18 + 4) + struct.pack("<IBBIII", 0, 1, 0, 2, 0, 18) + bytes(4), LinkErr.INVALID_DATA),
        (header(18 + 4) + struct.pack("<IBBIII", 0, 1, 0, 1, 0, 10) + bytes(4), LinkErr.INVALID_DATA),
    ],
    ids=["magic", "version", "short", "oversized", "too-many-caps", "caps-past-end", "caps-offset-inside-header"],
)
def test_link_errors_sent_as_libspice(data: bytes, code: int) -> None:
    server = ServerLink()
    with pytest.raises(LinkError) as e:
        server.receive_data(data)
    assert e.value.code == code
    assert server.data_to_send() == error_reply(code)
    assert server.failed


def test_major_zero_closes_silently() -> None:
    server = ServerLink()
    with pytest.raises(LinkError):
        server.receive_data(header(18, major=0))
    assert server.data_to_send() == b""


def test_wrong_auth_mechanism_gets_full_error() -> None:
    server = ServerLink()
    server.receive_data(header(22) + LinkMess(0, 1, 0, COMMON, ()).encode())
    server.events()
    server.accept(KEY, COMMON, ())
    server.data_to_send()
    with pytest.raises(LinkError) as e:
        server.receive_data(struct.pack("<I", AuthMechanism.SASL))
    assert e.value.code == LinkErr.INVALID_DATA
    assert server.data_to_send() == error_reply(LinkErr.INVALID_DATA)


def test_reject_and_bare_result() -> None:
    server = ServerLink()
    server.receive_data(header(18) + LinkMess(0, 9, 0).encode())
    server.events()
    server.reject(LinkErr.CHANNEL_NOT_AVAILABLE)
    assert server.data_to_send() == error_reply(LinkErr.CHANNEL_NOT_AVAILABLE)
    s2 = ServerLink()
    s2.receive_data(header(18) + LinkMess(0, 1, 0).encode())
    s2.events()
    s2.accept(KEY, COMMON, ())
    s2.data_to_send()
    s2.receive_data(bytes(128))
    s2.finish(LinkErr.PERMISSION_DENIED)
    assert s2.data_to_send() == struct.pack("<I", LinkErr.PERMISSION_DENIED) and s2.failed


def test_link_reply_layout() -> None:
    data = LinkReply(0, KEY, (0xB,), (0x1052,)).encode()
    assert data[:16] == header(178 + 8)
    assert struct.unpack_from("<III", data, 16 + 4 + 162) == (1, 1, 178)
    assert data[-8:] == struct.pack("<II", 0xB, 0x1052)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_server_link(data: bytes) -> None:
    """Any bytes: the server link parses, waits for more, or raises LinkError -- nothing else."""
    server = ServerLink()
    try:
        server.receive_data(data)
        for ev in server.events():
            assert isinstance(ev, LinkRequest)
            server.accept(KEY, COMMON, ())
    except LinkError as exc:
        assert exc.code in LinkErr._value2member_map_
    assert server.buffered <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255), st.lists(st.integers(0, 2**32 - 1), max_size=8), st.lists(st.integers(0, 2**32 - 1), max_size=8), st.binary(max_size=40))
def test_fuzz_link_mess_structured(conn: int, ctype: int, cid: int, common: list[int], chan: list[int], tail: bytes) -> None:
    mess = LinkMess(conn, ctype, cid, tuple(common), tuple(chan))
    raw = mess.encode()
    assert LinkMess.parse(raw) == mess
    assert LinkMess.parse(raw + tail) == mess  # trailing bytes accepted
    for cut in range(len(raw)):
        try:
            LinkMess.parse(raw[:cut])
        except LinkError as exc:
            assert exc.code == LinkErr.INVALID_DATA


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_client_link(data: bytes) -> None:
    client = ClientLink(LinkMess(0, 1, 0, COMMON, ()))
    try:
        client.receive_data(data)
    except LinkError:
        pass
