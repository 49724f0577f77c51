"""spiceserver.proto.usbredir: hello and caps, 64-bit ids, every message both ways under each layout,
the checks on receive (each a ProtocolError) and on send (ValueError), limits before buffering, the
filter helpers; and a hypothesis fuzz: parse or ProtocolError, and any split of valid input gives
the same packets."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.errors import ProtocolError
from spiceserver.proto import usbredir_messages as m
from spiceserver.proto.usbredir import (
    GUEST,
    GUEST_CAPS,
    HOST,
    MAX_PACKET,
    FilterRule,
    Packet,
    UsbRedirConnection,
    caps_mask,
    check_filter,
    filter_to_string,
    parse_filter,
)
from spiceserver.proto.usbredir_messages import Cap, MsgType

EP_TYPES = tuple([0, 2, 3] + [255] * 13 + [0, 2] + [255] * 14)


def pair(guest_caps: int = GUEST_CAPS, host_caps: int = GUEST_CAPS) -> tuple[UsbRedirConnection, UsbRedirConnection]:
    g = UsbRedirConnection(GUEST, "guest", guest_caps)
    h = UsbRedirConnection(HOST, "host", host_caps)
    assert h.receive_data(g.data_to_send()) == [Packet(0, m.Hello("guest", guest_caps))]
    assert g.receive_data(h.data_to_send()) == [Packet(0, m.Hello("host", host_caps))]
    return g, h


def header(mtype: int, length: int, id: int = 0, wide: bool = True) -> bytes:
    return struct.pack("<IIQ" if wide else "<III", mtype, length, id)


def test_hello_and_caps() -> None:
    g, h = pair()
    assert g.peer_version == "host" and h.peer_version == "guest"
    assert g.ids_64bit and h.ids_64bit
    assert g.negotiated == m.Negotiated(
        device_version=True, ep_max_packet_size=True, bulk_streams=False, bulk_length_32=True
    )
    # the hello is 32-bit-id framed, 64 bytes of version then the caps word
    raw = UsbRedirConnection(GUEST, "v", 0x12).data_to_send()
    assert raw == struct.pack("<III", 0, 68, 0) + b"v" + b"\0" * 63 + struct.pack("<I", 0x12)
    # 64-bit ids only when both have the cap
    g, h = pair(GUEST_CAPS, GUEST_CAPS & ~caps_mask(Cap.IDS_64BITS))
    assert not g.ids_64bit and not h.ids_64bit
    h.send(m.ConfigurationStatus(0, 1), 0x1_0000_0005)  # truncated to 32 bits on the wire
    assert g.receive_data(h.data_to_send()) == [Packet(5, m.ConfigurationStatus(0, 1))]
    # bulk streams without ep_info_max_packet_size are dropped, as usbredirparser_verify_caps does
    g = UsbRedirConnection(GUEST, "g", 0xFF)
    g.receive_data(UsbRedirConnection(HOST, "h", caps_mask(Cap.BULK_STREAMS)).data_to_send())
    assert not g.peer_has_cap(Cap.BULK_STREAMS)


LAYOUTS = {
    "full": (GUEST_CAPS, GUEST_CAPS),
    "none": (0, 0),
    "streams": (0xFF, 0xFF),
}
SAMPLES: list[tuple[int, m.UsbRedirMessage]] = [
    (HOST, m.DeviceConnect(2, 8, 6, 0x50, 0x2B23, 0xCDCD, 0x0200)),
    (HOST, m.DeviceDisconnect()),
    (HOST, m.InterfaceInfo((0,), (8,), (6,), (0x50,))),
    (HOST, m.InterfaceInfo((), (), (), ())),
    (HOST, m.EpInfo(EP_TYPES, (1,) * 32, (0,) * 32, (512,) * 32, (4,) * 32)),
    (HOST, m.ConfigurationStatus(0, 1)),
    (HOST, m.AltSettingStatus(0, 0, 1)),
    (HOST, m.IsoStreamStatus(0, 0x81)),
    (HOST, m.InterruptReceivingStatus(0, 0x83)),
    (HOST, m.BulkStreamsStatus(2, 4, 0)),
    (HOST, m.BulkReceivingStatus(1, 0x81, 0)),
    (HOST, m.ControlPacket(0x80, 6, 0x80, 0, 0x100, 0, 2, b"\x12\x01")),
    (HOST, m.BulkPacket(0x81, 0, 3, 0, b"abc")),
    (HOST, m.BufferedBulkPacket(1, 2, 0x81, 0, b"xy")),
    (HOST, m.IsoPacket(0x81, 0, 1, b"i")),
    (HOST, m.InterruptPacket(0x83, 0, 1, b"k")),
    (HOST, m.InterruptPacket(0x04, 0, 1)),
    (GUEST, m.Reset()),
    (GUEST, m.SetConfiguration(1)),
    (GUEST, m.GetConfiguration()),
    (GUEST, m.SetAltSetting(0, 1)),
    (GUEST, m.GetAltSetting(0)),
    (GUEST, m.StartIsoStream(0x81, 8, 3)),
    (GUEST, m.StopIsoStream(0x81)),
    (GUEST, m.StartInterruptReceiving(0x83)),
    (GUEST, m.StopInterruptReceiving(0x83)),
    (GUEST, m.AllocBulkStreams(2, 4)),
    (GUEST, m.FreeBulkStreams(2)),
    (GUEST, m.CancelDataPacket()),
    (GUEST, m.FilterReject()),
    (GUEST, m.FilterFilter("-1,-1,-1,-1,1")),
    (GUEST, m.DeviceDisconnectAck()),
    (GUEST, m.StartBulkReceiving(1, 4096, 0x81, 2)),
    (GUEST, m.StopBulkReceiving(1, 0x81)),
    (GUEST, m.ControlPacket(0x00, 9, 0x00, 0, 1, 0, 2, b"ok")),
    (GUEST, m.BulkPacket(0x02, 0, 2, 0, b"hi")),
    (GUEST, m.BulkPacket(0x81, 0, 100_000)),
    (GUEST, m.IsoPacket(0x01, 0, 2, b"so")),
    (GUEST, m.InterruptPacket(0x04, 0, 1, b"!")),
]
NEEDS = {
    m.FilterReject: Cap.FILTER,
    m.FilterFilter: Cap.FILTER,
    m.DeviceDisconnectAck: Cap.DEVICE_DISCONNECT_ACK,
    m.StartBulkReceiving: Cap.BULK_RECEIVING,
    m.StopBulkReceiving: Cap.BULK_RECEIVING,
    m.BulkReceivingStatus: Cap.BULK_RECEIVING,
    m.BufferedBulkPacket: Cap.BULK_RECEIVING,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sender, msg", SAMPLES, ids=[f"{type(s[1]).__name__}-{i}" for i, s in enumerate(SAMPLES)])
def test_every_message_round_trips(layout: str, sender: int, msg: m.UsbRedirMessage) -> None:
    g, h = pair(*LAYOUTS[layout])
    tx, rx = (h, g) if sender == HOST else (g, h)
    neg = g.negotiated
    cap = NEEDS.get(type(msg))
    too_long = isinstance(msg, m.BulkPacket) and msg.length > 0xFFFF and not neg.bulk_length_32
    if (cap is not None and not tx.peer_has_cap(cap)) or too_long:
        with pytest.raises(ValueError):
            tx.send(msg, 9)
        return
    tx.send(msg, 9)
    raw = tx.data_to_send()
    want = type(msg).from_header(msg.pack_header(neg), msg.payload(), neg)
    if isinstance(msg, m.DeviceConnect) and not neg.device_version:
        assert want.device_version_bcd == 0  # type: ignore[attr-defined]
    if isinstance(msg, m.EpInfo) and not neg.ep_max_packet_size:
        assert want.max_packet_size == (0,) * 32  # type: ignore[attr-defined]
    assert rx.receive_data(raw) == [Packet(9, want)]
    # byte by byte: the same packet
    tx.send(msg, 9)
    raw = tx.data_to_send()
    got = []
    for i in range(len(raw)):
        got += rx.receive_data(raw[i : i + 1])
    assert got == [Packet(9, want)]


def test_struct_sizes_follow_the_caps() -> None:
    full, none, streams = m.Negotiated(True, True, False, True), m.Negotiated(), m.Negotiated(True, True, True, True)
    assert m.DeviceConnect.header_struct(full).size == 10 and m.DeviceConnect.header_struct(none).size == 8
    assert m.EpInfo.header_struct(none).size == 96
    assert m.EpInfo.header_struct(full).size == 160
    assert m.EpInfo.header_struct(streams).size == 288
    assert m.BulkPacket.header_struct(full).size == 10 and m.BulkPacket.header_struct(none).size == 8
    assert m.InterfaceInfo.header_struct(none).size == 132
    assert m.ControlPacket.header_struct(none).size == 10
    assert m.BufferedBulkPacket.header_struct(none).size == 10
    assert m.StartBulkReceiving.header_struct(none).size == 10
    assert m.BulkStreamsStatus.header_struct(none).size == 9
    assert sorted(m.MESSAGE_CLASSES) == list(range(28)) + list(range(100, 105))


def bad(g: UsbRedirConnection, data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        g.receive_data(data)


def test_checks_on_receive() -> None:
    # before hello, second hello
    g = UsbRedirConnection(GUEST)
    bad(g, struct.pack("<III", MsgType.DEVICE_DISCONNECT, 0, 0), "before hello")
    g, _ = pair()
    bad(g, struct.pack("<III", 0, 68, 0) + bytes(68), "second hello")
    # unknown type, guest-only types, length rules
    g, _ = pair()
    bad(g, header(99, 0), "unknown packet type 99")
    g, _ = pair()
    bad(g, header(MsgType.SET_CONFIGURATION, 1) + b"\x01", "may not be sent by the peer")
    g, _ = pair()
    bad(g, header(MsgType.CONFIGURATION_STATUS, 3) + b"\0\0\0", "length 3")
    g, _ = pair()
    bad(g, header(MsgType.CONFIGURATION_STATUS, 1) + b"\0", "length 1")
    g, _ = pair()
    bad(g, header(MsgType.INTERFACE_INFO, 132) + struct.pack("<I", 33) + bytes(128), "interface_count 33")
    # direction of data: IN reply with the wrong length, OUT reply with data, iso OUT status
    g, _ = pair()
    bad(
        g,
        header(MsgType.BULK_PACKET, 13) + struct.pack("<BBHIH", 0x81, 0, 4, 0, 0) + b"abc",
        "3 data bytes, header length 4",
    )
    g, _ = pair()
    bad(g, header(MsgType.BULK_PACKET, 11) + struct.pack("<BBHIH", 0x02, 0, 1, 0, 0) + b"a", "unexpected data")
    g, _ = pair()
    bad(g, header(MsgType.ISO_PACKET, 4) + struct.pack("<BBH", 0x01, 0, 0), "wrong direction")
    g, _ = pair()
    bad(g, header(MsgType.INTERRUPT_RECEIVING_STATUS, 2) + b"\x00\x03", "OUT endpoint")
    # caps: filter_filter without our cap filter; disconnect_ack without the cap (host role)
    g, _ = pair(GUEST_CAPS & ~caps_mask(Cap.FILTER))
    bad(g, header(MsgType.FILTER_FILTER, 3) + b"1,\0", "without cap filter")
    g, _ = pair()
    bad(g, header(MsgType.FILTER_FILTER, 3) + b"abc", "NUL terminated")
    g, h = pair(host_caps=GUEST_CAPS & ~caps_mask(Cap.DEVICE_DISCONNECT_ACK))
    with pytest.raises(ProtocolError, match="device_disconnect_ack"):
        h.receive_data(header(MsgType.DEVICE_DISCONNECT_ACK, 0))
    g, _ = pair(GUEST_CAPS & ~caps_mask(Cap.BULK_RECEIVING))
    bad(g, header(MsgType.BUFFERED_BULK_PACKET, 10) + struct.pack("<IIBB", 0, 0, 0x81, 0), "bulk_receiving")


def test_length_limit_before_buffering() -> None:
    g, _ = pair()
    with pytest.raises(ProtocolError, match="over"):
        g.receive_data(header(MsgType.BULK_PACKET, MAX_PACKET + 1))  # the 16 header bytes suffice
    g = UsbRedirConnection(GUEST, max_packet=1000)
    g.receive_data(UsbRedirConnection(HOST).data_to_send())
    with pytest.raises(ProtocolError, match="over 1000"):
        g.receive_data(header(MsgType.BULK_PACKET, 1001))
    # a partial packet under the limit is kept, not parsed
    g, _ = pair()
    assert g.receive_data(header(MsgType.BULK_PACKET, 1010) + bytes(100)) == []


def test_checks_on_send() -> None:
    g, h = pair()
    for msg in (m.DeviceConnect(0, 0, 0, 0, 1, 2, 3), m.ConfigurationStatus(0, 1), m.Hello("x", 0)):
        with pytest.raises(ValueError):
            g.send(msg)
    with pytest.raises(ValueError):
        h.send(m.Reset())
    with pytest.raises(ValueError, match="wrong direction"):
        g.send(m.InterruptPacket(0x83, 0, 8))
    with pytest.raises(ValueError, match="data bytes"):
        g.send(m.BulkPacket(0x02, 0, 5, 0, b"abc"))
    with pytest.raises(ValueError, match="unexpected data"):
        g.send(m.BulkPacket(0x81, 0, 3, 0, b"abc"))
    with pytest.raises(ValueError):
        g.send(m.SetConfiguration(256))
    with pytest.raises(ValueError):
        g.send(m.FilterFilter("1,2"))
    with pytest.raises(ValueError):
        h.send(m.InterfaceInfo(tuple(range(33)), (0,) * 33, (0,) * 33, (0,) * 33))


def test_filter_helpers() -> None:
    rules = parse_filter("0x03,-1,-1,-1,0|-1,-1,-1,-1,1")
    assert rules == (FilterRule(3, -1, -1, -1, False), FilterRule(allow=True))
    assert filter_to_string(rules) == "0x03,-1,-1,-1,0|-1,-1,-1,-1,1"
    assert parse_filter("||8,,0x2b23,-1,-1,1|") == (FilterRule(8, 0x2B23, -1, -1, True),)
    assert parse_filter("010,-1,-1,-1,1") == (FilterRule(8, -1, -1, -1, True),)  # strtol base 0: octal
    assert parse_filter("") == ()
    for text in (
        "1,2,3,4",
        "1,2,3,4,5,6",
        "256,-1,-1,-1,1",
        "0x,-1,-1,-1,1",
        "08,-1,-1,-1,1",
        "-2,-1,-1,-1,1",
        "1 ,1,1,1,1",
    ):
        with pytest.raises(ValueError):
            parse_filter(text)
    # a HID keyboard refused, the rest allowed
    assert check_filter(rules, 0, [(3, 1, 1)], 1, 2, 3) == -1
    assert check_filter(rules, 0, [(8, 6, 0x50)], 1, 2, 3) == 0
    # non-boot HID interfaces of a multi-interface device are skipped
    assert check_filter(rules, 0, [(3, 0, 0), (1, 1, 0)], 1, 2, 3) == 0
    assert check_filter((FilterRule(8, allow=True),), 0, [(3, 1, 1)], 1, 2, 3) == -2
    assert check_filter((FilterRule(8, allow=True),), 0, [(3, 1, 1)], 1, 2, 3, default_allow=True) == 0


# --- fuzz ---------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(max_size=80), max_size=8), role=st.sampled_from([GUEST, HOST]))
def test_fuzz_parse_or_protocol_error(chunks: list[bytes], role: int) -> None:
    conn = UsbRedirConnection(role, caps=0xFF)
    other = UsbRedirConnection(HOST if role == GUEST else GUEST, caps=0xFF)
    conn.receive_data(other.data_to_send())
    for chunk in chunks:
        try:
            packets = conn.receive_data(chunk)
        except ProtocolError:
            return
        for p in packets:
            assert isinstance(p.msg, m.UsbRedirMessage)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=6),
    mtype=st.sampled_from(sorted(m.MESSAGE_CLASSES)),
    length=st.integers(0, 400),
)
def test_fuzz_typed_headers(chunks: list[bytes], mtype: int, length: int) -> None:
    """Random bodies behind a real header of every type: parse or ProtocolError."""
    g, _ = pair(0xFF, 0xFF)
    body = b"".join(chunks)
    try:
        g.receive_data(header(mtype, length) + body[:length])
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.sampled_from([s for s in SAMPLES if s[0] == HOST]), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_fuzz_any_split_gives_the_same_packets(picks: list[tuple[int, m.UsbRedirMessage]], cuts: list[int]) -> None:
    g, h = pair(0xFF, 0xFF)
    for i, (_, msg) in enumerate(picks):
        h.send(msg, i)
    raw = h.data_to_send()
    marks = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    got = []
    for a, b in itertools.pairwise(marks):
        got += g.receive_data(raw[a:b])
    neg = g.negotiated
    assert got == [
        Packet(i, type(msg).from_header(msg.pack_header(neg), msg.payload(), neg)) for i, (_, msg) in enumerate(picks)
    ]
