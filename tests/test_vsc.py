"""libcacard VSC messages (spiceserver.proto.vsc): known bytes both orders, the stream reader's
bounds, and fuzz ("messages or ProtocolError, nothing else"; pack/parse round trips)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto import vsc
from spiceserver.proto.vsc import (
    LITTLE,
    MAX_PAYLOAD,
    NETWORK,
    UNDEFINED_READER_ID,
    VscApdu,
    VscAtr,
    VscCardRemove,
    VscError,
    VscErrorCode,
    VscFlush,
    VscFlushComplete,
    VscInit,
    VscMessage,
    VscReader,
    VscReaderAdd,
    VscReaderRemove,
    VscUnknown,
    pack,
    parse,
)

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# QEMU ccid-card-passthru's Init (network order): magic "VSCD", version 2, one cap word 0
QEMU_INIT = bytes.fromhex("00000001 ffffffff 0000000c") + b"VSCD" + bytes.fromhex("00000002 00000000")
# spice-gtk's ReaderAdd on the SPICE wire payload (little-endian header)
GTK_READER_ADD = bytes.fromhex("03000000 ffffffff 18000000") + b"Spice Software Smartcard"


def test_known_bytes() -> None:
    assert pack(VscInit(), NETWORK) == QEMU_INIT
    assert parse(QEMU_INIT, NETWORK) == VscInit(UNDEFINED_READER_ID, b"VSCD", 2, (0,))
    msg = parse(GTK_READER_ADD, LITTLE)
    assert msg == VscReaderAdd(UNDEFINED_READER_ID, b"Spice Software Smartcard")
    assert isinstance(msg, VscReaderAdd) and msg.text == "Spice Software Smartcard"
    assert pack(msg, LITTLE) == GTK_READER_ADD
    assert pack(VscError(3, VscErrorCode.CANNOT_ADD_MORE_READERS), NETWORK) == bytes.fromhex(
        "00000002 00000003 00000004 00000002"
    )
    assert pack(VscError(3, 0), LITTLE) == bytes.fromhex("02000000 03000000 04000000 00000000")
    apdu = bytes.fromhex("00A4040007A0000000790100")
    assert pack(VscApdu(0, apdu), NETWORK) == bytes.fromhex("00000007 00000000 0000000c") + apdu
    assert pack(VscCardRemove(1), LITTLE) == bytes.fromhex("06000000 01000000 00000000")


def test_payloads_follow_the_header_order_and_trailing_bytes_are_ignored() -> None:
    assert parse(bytes.fromhex("02000000 00000000 06000000 01000000 ffff"), LITTLE) == VscError(0, 1)
    assert parse(bytes.fromhex("00000004 00000002 00000003 abcdef"), NETWORK) == VscReaderRemove(2)
    init = VscInit(caps=(1, 2, 3))
    assert parse(pack(init, LITTLE), LITTLE) == init
    assert parse(pack(init, LITTLE) + b"zz", LITTLE) == init


@pytest.mark.parametrize(
    ("data", "order"),
    [
        (b"\0" * 11, NETWORK),  # short header
        (bytes.fromhex("00000002 00000000 00000003 000000"), NETWORK),  # Error needs 4 bytes
        (bytes.fromhex("00000001 00000000 00000004") + b"VSCD", NETWORK),  # Init needs magic + version
        (bytes.fromhex("00000007 00000000 00000010 0102"), NETWORK),  # length past the data
        (bytes.fromhex("07000000 00000000 01000100"), LITTLE),  # 64 KiB + 1
    ],
)
def test_bad_messages_raise_protocol_error(data: bytes, order: vsc.ByteOrder) -> None:
    with pytest.raises(ProtocolError):
        parse(data, order)


def test_unknown_types_are_kept() -> None:
    assert parse(bytes.fromhex("0000002a 00000001 00000002 abcd"), NETWORK) == VscUnknown(1, 42, b"\xab\xcd")
    assert pack(VscUnknown(1, 42, b"\xab\xcd"), NETWORK) == bytes.fromhex("0000002a 00000001 00000002 abcd")


def test_reader_cuts_a_stream_in_any_pieces() -> None:
    msgs: list[VscMessage] = [
        VscInit(),
        VscReaderAdd(0),
        VscError(0, 0),
        VscAtr(0, b"\x3b\x00"),
        VscApdu(0, b"\x90\x00"),
        VscFlush(0),
        VscFlushComplete(0),
    ]
    stream = b"".join(pack(m, NETWORK) for m in msgs)
    for step in (1, 5, 12, 13, len(stream)):
        reader = VscReader(NETWORK)
        out: list[VscMessage] = []
        for i in range(0, len(stream), step):
            out += reader.feed(stream[i : i + step])
        assert out == msgs
        assert reader.pending == 0


def test_reader_refuses_an_oversized_header_before_buffering_and_stays_failed() -> None:
    reader = VscReader(NETWORK, max_payload=300)
    assert reader.feed(bytes.fromhex("00000007 00000000")) == []
    with pytest.raises(ProtocolError, match="announces 301"):
        reader.feed(bytes.fromhex("0000012d"))
    assert reader.pending == 0
    with pytest.raises(ProtocolError):
        reader.feed(pack(VscApdu(0, b"x"), NETWORK))
    reader.reset()
    assert reader.feed(pack(VscApdu(0, b"x"), NETWORK)) == [VscApdu(0, b"x")]


def test_max_payload_passes() -> None:
    big = VscApdu(0, bytes(MAX_PAYLOAD))
    assert VscReader(LITTLE).feed(pack(big, LITTLE)) == [big]


# --- fuzz -----------------------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
blob = st.binary(max_size=300)
messages = st.one_of(
    st.builds(VscInit, u32, st.binary(min_size=4, max_size=4), u32, st.lists(u32, max_size=4).map(tuple)),
    st.builds(VscError, u32, u32),
    st.builds(VscReaderAdd, u32, blob),
    st.builds(VscReaderRemove, u32),
    st.builds(VscAtr, u32, blob),
    st.builds(VscCardRemove, u32),
    st.builds(VscApdu, u32, blob),
    st.builds(VscFlush, u32),
    st.builds(VscFlushComplete, u32),
    st.builds(VscUnknown, u32, st.integers(10, 0xFFFFFFFF) | st.just(0), blob),
)
orders = st.sampled_from([LITTLE, NETWORK])


@FAST
@given(st.lists(messages, max_size=8), orders, st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_fuzz_round_trip_through_the_reader(msgs: list[VscMessage], order: vsc.ByteOrder, cuts: list[int]) -> None:
    stream = b"".join(pack(m, order) for m in msgs)
    reader = VscReader(order)
    out: list[VscMessage] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += reader.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == msgs
    for m in msgs:
        assert parse(pack(m, order), order) == m


@FAST
@given(st.lists(st.binary(max_size=80), max_size=10), orders, st.integers(0, 200))
def test_fuzz_reader_gives_messages_or_protocol_error(chunks: list[bytes], order: vsc.ByteOrder, limit: int) -> None:
    reader = VscReader(order, max_payload=limit)
    for chunk in chunks:
        try:
            for m in reader.feed(chunk):
                assert isinstance(m, VscMessage)
        except ProtocolError:
            return
        assert reader.pending < vsc.HEADER_SIZE + limit


@FAST
@given(u32, u32, st.binary(max_size=64), orders)
def test_fuzz_decode(msg_type: int, reader_id: int, data: bytes, order: vsc.ByteOrder) -> None:
    try:
        m = vsc.decode(msg_type, reader_id, data, order)
    except ProtocolError:
        return
    assert m.reader_id == reader_id and vsc.type_of(m) == msg_type
