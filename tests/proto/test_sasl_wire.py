"""The AUTH_SASL exchange's framing (spice ``server/red-stream.cpp`` ``red_sasl_*``), byte for byte."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import LinkError, ProtocolError
from spiceserver.proto.enums import LinkErr
from spiceserver.proto.link import LinkReply
from spiceserver.proto.sasl import (
    AUTH_FAILED,
    SASL_DATA_MAX_LEN,
    SaslStart,
    SaslStep,
    ServerSasl,
    encode_data,
    encode_mechlist,
)

MECHS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def start(mech: bytes, data: bytes | None) -> bytes:
    return u32(len(mech)) + mech + encode_data(data)


def test_mechlist_as_sasl_listmech_writes_it() -> None:
    s = ServerSasl(MECHS)
    assert s.data_to_send() == u32(33) + b",SCRAM-SHA-256,SCRAM-SHA-1,PLAIN,"
    assert encode_mechlist(["PLAIN"]) == b",PLAIN,"
    for bad in ([], ["plain"], ["A,B"], ["X" * 21]):
        with pytest.raises(ValueError):
            encode_mechlist(bad)


def test_start_step_reply_and_accept() -> None:
    s = ServerSasl(MECHS)
    s.data_to_send()
    s.receive_data(start(b"SCRAM-SHA-256", b"n,,n=u,r=abc"))
    assert s.events() == [SaslStart("SCRAM-SHA-256", b"n,,n=u,r=abc")]
    s.reply(b"r=abcdef,s=c2FsdA==,i=4096", complete=False)
    assert s.data_to_send() == u32(27) + b"r=abcdef,s=c2FsdA==,i=4096\0" + b"\0"
    s.receive_data(encode_data(b"c=biws,r=abcdef,p=xx")[:5])  # split anywhere
    assert s.events() == []
    s.receive_data(encode_data(b"c=biws,r=abcdef,p=xx")[5:] + b"data phase")
    assert s.events() == [SaslStep(b"c=biws,r=abcdef,p=xx")]
    s.reply(b"v=sig", complete=True)
    s.finish(True)
    assert s.data_to_send() == u32(6) + b"v=sig\0" + b"\1" + u32(0)
    assert s.done and not s.failed
    assert s.leftover() == b"data phase"


def test_refusal_bytes() -> None:
    s = ServerSasl(["PLAIN"])
    s.data_to_send()
    s.receive_data(start(b"PLAIN", b"\0bob\0pw"))
    s.reply(None, complete=True)
    s.finish(False)
    assert s.data_to_send() == u32(0) + b"\1" + u32(1) + u32(22) + b"Authentication failed\0"
    assert AUTH_FAILED == b"Authentication failed\0"
    assert s.failed


def test_null_is_not_empty() -> None:
    s = ServerSasl(["PLAIN"])
    s.receive_data(start(b"PLAIN", None))
    assert s.events() == [SaslStart("PLAIN", None)]
    s.reply(b"", complete=False)
    assert s.data_to_send()[-6:] == u32(1) + b"\0" + b"\0"  # empty challenge: len 1, the NUL
    s.receive_data(u32(1) + b"\0")
    assert s.events() == [SaslStep(b"")]


def test_last_byte_is_dropped_whatever_it_is() -> None:
    s = ServerSasl(["PLAIN"])
    s.receive_data(u32(5) + b"PLAIN" + u32(3) + b"abX")
    assert s.events() == [SaslStart("PLAIN", b"ab")]


@pytest.mark.parametrize("n", [0, 101])
def test_bad_mechname_length_closes(n: int) -> None:
    s = ServerSasl(MECHS)
    s.data_to_send()
    with pytest.raises(ProtocolError):
        s.receive_data(u32(n))
    assert s.failed and s.data_to_send() == b""


@pytest.mark.parametrize("name", [b"DIGEST-MD5", b"SCRAM-SHA-256,PLAIN", b"PLAI", b"SCRAM", b"plain"])
def test_unknown_mechanism_is_invalid_data(name: bytes) -> None:
    s = ServerSasl(MECHS)
    s.data_to_send()
    with pytest.raises(LinkError) as e:
        s.receive_data(start(name, b"x"))
    assert e.value.code == LinkErr.INVALID_DATA
    assert s.data_to_send() == LinkReply.encode_error(LinkErr.INVALID_DATA)


def test_oversized_data_is_refused_before_buffering() -> None:
    s = ServerSasl(MECHS)
    s.data_to_send()
    with pytest.raises(LinkError) as e:  # first data: INVALID_DATA, as libspice
        s.receive_data(u32(5) + b"PLAIN" + u32(SASL_DATA_MAX_LEN + 1))
    assert e.value.code == LinkErr.INVALID_DATA
    s = ServerSasl(MECHS)
    s.receive_data(start(b"PLAIN", None))
    s.reply(b"", complete=False)
    with pytest.raises(ProtocolError):  # a later step: the connection is closed
        s.receive_data(u32(0xFFFFFFFF))
    s = ServerSasl(MECHS)
    s.receive_data(u32(5) + b"PLAIN" + u32(SASL_DATA_MAX_LEN))  # at the limit: waits for it
    assert s.events() == []


def test_flood_ahead_of_the_reply_is_bounded() -> None:
    s = ServerSasl(["PLAIN"])
    s.receive_data(start(b"PLAIN", b"\0a\0b"))
    with pytest.raises(ProtocolError):
        s.receive_data(bytes(1 << 20))


def test_api_misuse() -> None:
    s = ServerSasl(["PLAIN"])
    with pytest.raises(RuntimeError):
        s.reply(None, complete=True)
    s.receive_data(start(b"PLAIN", b"x"))
    with pytest.raises(RuntimeError):
        s.finish(True)
    with pytest.raises(ValueError):
        s.reply(bytes(SASL_DATA_MAX_LEN + 1), complete=True)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_fuzz_parses_or_raises_link_errors(chunks: list[bytes], prefix: bool) -> None:
    s = ServerSasl(MECHS)
    if prefix:  # a valid start, so the fuzz reaches the steps too
        chunks = [start(b"SCRAM-SHA-1", b"n,,n=a,r=b"), *chunks]
    try:
        for c in chunks:
            s.receive_data(c)
            for ev in s.events():
                assert isinstance(ev, (SaslStart, SaslStep))
                s.reply(b"x", complete=False)
    except (ProtocolError, LinkError):
        assert s.failed


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=32))
def test_fuzz_lengths(n1: int, n2: int, tail: bytes) -> None:
    s = ServerSasl(MECHS)
    try:
        s.receive_data(u32(n1) + b"PLAIN"[: max(0, min(n1, 5))] + u32(n2) + tail)
        s.events()
    except (ProtocolError, LinkError):
        assert s.failed
