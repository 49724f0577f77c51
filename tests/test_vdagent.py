"""The vdagent wire (spice-protocol ``vd_agent.h``): message pieces, reassembly with libspice's rules,
capabilities and volume sync, fuzzed: any input parses or raises ProtocolError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto.vdagent import (
    HEADER,
    MAX_DATA_SIZE,
    AgentCap,
    AgentMessage,
    AgentMessageType,
    AgentStreamReader,
    AnnounceCapabilities,
    AudioVolumeSync,
    FileXferStatus,
    FileXferStatusMessage,
    caps_to_words,
    parse_file_xfer_id,
    split_message,
    words_to_caps,
)


def test_constants_match_vd_agent_h() -> None:
    assert HEADER.size == 20 and MAX_DATA_SIZE == 2048
    assert [int(t) for t in AgentMessageType] == list(range(1, 17))
    assert (AgentMessageType.ANNOUNCE_CAPABILITIES.value, AgentMessageType.AUDIO_VOLUME_SYNC.value) == (6, 15)
    assert [int(c) for c in AgentCap] == list(range(18))
    assert (AgentCap.AUDIO_VOLUME_SYNC.value, AgentCap.FILE_XFER_DISABLED.value) == (11, 13)
    assert (FileXferStatus.CANCELLED.value, FileXferStatus.DISABLED.value) == (1, 7)
    # the real spice-vdagent 0.22.1 announced 0x38de7 (devices.md B)
    assert caps_to_words(words_to_caps([0x38DE7])) == (0x38DE7,)
    assert AgentCap.AUDIO_VOLUME_SYNC in words_to_caps([0x38DE7])


def test_header_bytes() -> None:
    raw = AgentMessage(AgentMessageType.AUDIO_VOLUME_SYNC, b"\x01\x00\x00", opaque=7).pack()
    assert raw == struct.pack("<IIQI", 1, 15, 7, 3) + b"\x01\x00\x00"


def test_split_and_reassemble_a_long_message() -> None:
    msg = AgentMessage(4, bytes(range(256)) * 20)
    pieces = split_message(msg)
    assert [len(p) for p in pieces] == [2048, 2048, 1044]
    assert b"".join(pieces) == msg.pack()
    r = AgentStreamReader(10_000)
    out = []
    for p in pieces:
        out += r.feed(p)
    assert out == [msg] and not r.in_message


def test_zero_size_message_and_several_in_byte_stream_mode() -> None:
    a, b = AgentMessage(13), AgentMessage(6, b"\x01\x00\x00\x00\x00\x08\x00\x00")
    stream = a.pack() + b.pack() + a.pack()
    r = AgentStreamReader(100, aligned=False)
    out = []
    for i in range(0, len(stream), 7):  # headers cut anywhere
        out += r.feed(stream[i : i + 7])
    assert out == [a, b, a]


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([b"\x00" * 2049], "2049 bytes"),
        ([struct.pack("<IIQI", 1, 6, 0, 4)[:19]], "no whole header"),
        ([struct.pack("<IIQI", 2, 6, 0, 0)], "protocol 2"),
        ([struct.pack("<IIQI", 1, 4, 0, 1 << 31)], "2147483648 bytes"),  # refused before buffering
        ([struct.pack("<IIQI", 1, 6, 0, 4) + b"\x00" * 5], "past the end"),
        ([struct.pack("<IIQI", 1, 6, 0, 0) * 2], "past the end"),
        ([struct.pack("<IIQI", 1, 6, 0, 8) + b"\x00" * 4, b"\x00" * 5], "past the end"),
    ],
)
def test_libspice_rules_for_the_clients_stream(pieces: list[bytes], reason: str) -> None:
    r = AgentStreamReader(1 << 20)
    with pytest.raises(ProtocolError, match=reason):
        for p in pieces:
            r.feed(p)


def test_size_checked_from_the_header_alone() -> None:
    r = AgentStreamReader(100, aligned=False)
    with pytest.raises(ProtocolError, match="at most 100"):
        r.feed(struct.pack("<IIQI", 1, 4, 0, 101))


def test_announce_capabilities() -> None:
    ann = AnnounceCapabilities(True, frozenset({AgentCap.AUDIO_VOLUME_SYNC, AgentCap.FILE_XFER_DISABLED}))
    assert ann.pack() == struct.pack("<II", 1, (1 << 11) | (1 << 13))
    assert AnnounceCapabilities.parse(ann.pack()) == ann
    assert AnnounceCapabilities.parse(b"\x00\x00\x00\x00\x01") == AnnounceCapabilities(False, frozenset())
    assert AnnounceCapabilities.parse(struct.pack("<III", 0, 0, 1)).caps == {32}
    with pytest.raises(ProtocolError):
        AnnounceCapabilities.parse(b"\x01\x00\x00")


def test_audio_volume_sync() -> None:
    # spice-gtk with a volume element at 0.5, muted: 0.5 * 65535 = 32767 on two channels
    raw = bytes([1, 1, 2]) + struct.pack("<HH", 32767, 32767)
    sync = AudioVolumeSync.parse(raw)
    assert sync == AudioVolumeSync(True, True, (32767, 32767)) and sync.pack() == raw
    assert AudioVolumeSync.parse(raw + b"\xff").volume == (32767, 32767)  # trailing bytes ignored
    assert AudioVolumeSync.parse(bytes([0, 0, 0])) == AudioVolumeSync(False, False, ())
    for bad in (b"", b"\x01\x00", bytes([1, 0, 2, 0, 0, 0])):
        with pytest.raises(ProtocolError):
            AudioVolumeSync.parse(bad)
    with pytest.raises(ValueError):
        AudioVolumeSync(True, False, (70000,)).pack()


def test_file_xfer_helpers() -> None:
    assert parse_file_xfer_id(struct.pack("<I", 9) + b"[vdagent-file-xfer]") == 9
    with pytest.raises(ProtocolError):
        parse_file_xfer_id(b"\x01")
    st_msg = FileXferStatusMessage(9, FileXferStatus.CANCELLED).message()
    assert st_msg.type == AgentMessageType.FILE_XFER_STATUS and st_msg.data == struct.pack("<II", 9, 1)
    assert FileXferStatusMessage.parse(st_msg.data) == FileXferStatusMessage(9, 1)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=2100), max_size=6), st.booleans())
def test_fuzz_reader_parses_or_protocol_error(pieces: list[bytes], aligned: bool) -> None:
    r = AgentStreamReader(4096, aligned=aligned)
    try:
        for p in pieces:
            for msg in r.feed(p):
                assert len(msg.data) <= 4096
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_payload_parsers(data: bytes) -> None:
    for parse in (AudioVolumeSync.parse, AnnounceCapabilities.parse, FileXferStatusMessage.parse, parse_file_xfer_id):
        try:
            parse(data)
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.binary(max_size=5000)), max_size=4), st.integers(20, 2048))
def test_split_reassemble_roundtrip(msgs: list[tuple[int, bytes]], piece: int) -> None:
    r = AgentStreamReader(5000, max_piece=piece)
    out: list[AgentMessage] = []
    sent = [AgentMessage(t, d) for t, d in msgs]
    for m in sent:
        for p in split_message(m, piece):
            assert len(p) <= piece
            out += r.feed(p)
    assert out == sent
