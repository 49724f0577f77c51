"""spiceserver.proto.usbredir against libusbredirparser (the usbredir 0.13 C parser QEMU and spice-gtk
use) through ctypes: our packets parse in it as the same values, its packets parse in ours and are
byte for byte what we pack, both refuse the same sends, under several cap sets and both roles; and
the filter helpers agree with usbredirfilter. Skipped when libusbredirparser.so.1 is missing
(Debian ``libusbredirparser1``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver.proto import usbredir_messages as m
from spiceserver.proto.usbredir import (
    GUEST,
    GUEST_CAPS,
    HOST,
    FilterRule,
    Packet,
    UsbRedirConnection,
    caps_mask,
    check_filter,
    filter_to_string,
    parse_filter,
)
from spiceserver.proto.usbredir_messages import Cap
from tests.support import usbredir_oracle as o

pytestmark = pytest.mark.skipif(
    o.LIB is None, reason="libusbredirparser.so.1 not installed (Debian libusbredirparser1)"
)

EP = tuple([0, 2, 255, 3] + [255] * 12 + [0, 2, 1] + [255] * 13)
GUEST_MSGS: list[m.UsbRedirMessage] = [
    m.Reset(),
    m.SetConfiguration(2),
    m.GetConfiguration(),
    m.SetAltSetting(1, 3),
    m.GetAltSetting(1),
    m.StartIsoStream(0x81, 8, 3),
    m.StopIsoStream(0x81),
    m.StartInterruptReceiving(0x83),
    m.StopInterruptReceiving(0x83),
    m.AllocBulkStreams(0x6, 16),
    m.FreeBulkStreams(0x6),
    m.CancelDataPacket(),
    m.FilterReject(),
    m.FilterFilter("0x03,-1,-1,-1,0|-1,-1,-1,-1,1"),  # as the library re-prints it
    m.StartBulkReceiving(0, 65536, 0x81, 4),
    m.StartBulkReceiving(3, 512, 0x82, 5),  # QEMU's parameters (RedirectedUsbDevice.start_bulk_receiving)
    m.StopBulkReceiving(0, 0x81),
    m.ControlPacket(0x80, 6, 0x80, 0, 0x100, 0, 18),
    m.ControlPacket(0x00, 9, 0x00, 0, 1, 0, 3, b"abc"),
    m.BulkPacket(0x02, 0, 5, 7, b"hello"),
    m.BulkPacket(0x81, 0, 512),
    m.BulkPacket(0x81, 0, 70000),
    m.BulkPacket(0x02, 0, 70000, 0, bytes(70000)),
    m.IsoPacket(0x01, 0, 3, b"iso"),
    m.InterruptPacket(0x04, 0, 2, b"hi"),
]
HOST_MSGS: list[m.UsbRedirMessage] = [
    m.DeviceConnect(2, 0xFF, 1, 2, 0x1234, 0x5678, 0x0201),
    m.InterfaceInfo((0, 1), (8, 3), (6, 1), (0x50, 2)),
    m.EpInfo(EP, tuple(range(32)), (0,) * 16 + (1,) * 16, tuple(range(64, 96)), tuple(range(100, 132))),
    m.ConfigurationStatus(0, 1),
    m.AltSettingStatus(4, 1, 2),
    m.IsoStreamStatus(0, 0x81),
    m.InterruptReceivingStatus(3, 0x83),
    m.BulkStreamsStatus(6, 16, 0),
    m.FilterFilter("0x08,0x2b23,-1,-1,1"),
    m.BulkReceivingStatus(0, 0x81, 0),
    m.ControlPacket(0x80, 6, 0x80, 0, 0x100, 0, 4, b"\x12\x01\x00\x02"),
    m.ControlPacket(0x00, 9, 0x00, 4, 1, 0, 3),
    m.BulkPacket(0x81, 0, 4, 0, b"data"),
    m.BulkPacket(0x81, 0, 70000, 0, bytes(range(256)) * 273 + bytes(112)),
    m.BulkPacket(0x02, 0, 5),
    m.IsoPacket(0x81, 0, 3, b"iso"),
    m.InterruptPacket(0x83, 0, 2, b"in"),
    m.InterruptPacket(0x04, 0, 2),
    m.BufferedBulkPacket(0, 4, 0x81, 0, b"buff"),
    m.BufferedBulkPacket(7, 70000, 0x82, 0, bytes(range(256)) * 273 + bytes(112)),  # a u32 length
    m.BufferedBulkPacket(0, 0, 0x81, 4, b""),  # a failed transfer: status, no data
    m.DeviceDisconnect(),
]
# (our caps, the library's caps): QEMU-like, none at all (32-bit ids, short structs), everything
CAPS = {
    "qemu": (GUEST_CAPS, GUEST_CAPS),
    "none": (0, 0),
    "all": (0xFF, 0xFF),
    "mixed": (caps_mask(Cap.IDS_64BITS, Cap.FILTER), caps_mask(Cap.IDS_64BITS, Cap.BULK_LENGTH_32BITS, Cap.FILTER)),
}
NO_ID = (
    m.DeviceConnect,
    m.DeviceDisconnect,
    m.Reset,
    m.InterfaceInfo,
    m.EpInfo,
    m.FilterReject,
    m.FilterFilter,
    m.DeviceDisconnectAck,
)


def handshake(role: int, ours: int, libs: int) -> tuple[UsbRedirConnection, o.LibParser]:
    conn = UsbRedirConnection(role, "ours", ours)
    lib = o.LibParser(host=role == GUEST, caps=libs)
    assert lib.feed(conn.data_to_send()) == 0
    hello = conn.receive_data(lib.take_output())
    assert [type(p.msg) for p in hello] == [m.Hello]
    assert conn.peer_version == "libusbredirparser oracle"
    assert lib.got[0][0] == m.MsgType.HELLO and lib.got[0][2]["version"] == b"ours"
    assert lib.errors == []
    return conn, lib


def normalized(msg: m.UsbRedirMessage, neg: m.Negotiated) -> m.UsbRedirMessage:
    return type(msg).from_header(msg.pack_header(neg), msg.payload(), neg)


@pytest.mark.parametrize("caps", CAPS, ids=list(CAPS))
@pytest.mark.parametrize("role", [GUEST, HOST], ids=["guest", "host"])
def test_our_packets_parse_in_libusbredirparser(role: int, caps: str) -> None:
    conn, lib = handshake(role, *CAPS[caps])
    ids = 0x1_2345_6789 if conn.ids_64bit else 0x1234_5678
    for n, msg in enumerate(GUEST_MSGS if role == GUEST else HOST_MSGS):
        id = 0 if isinstance(msg, NO_ID) else ids + n
        try:
            conn.send(msg, id)
        except ValueError:
            continue  # refused for the caps: the library refuses the same (test_same_refusals)
        before = len(lib.got)
        assert lib.feed(conn.data_to_send()) == 0, (msg, lib.errors)
        assert lib.errors == [], msg
        assert len(lib.got) == before + 1, msg
        t, got_id, fields, data = lib.got[-1]
        assert (t, got_id) == (msg.TYPE, id), msg
        if isinstance(msg, m.FilterFilter):
            assert fields["rules"] == parse_filter(msg.rules)
        else:
            assert o.trim(t, fields, conn.negotiated) == o.expected_fields(msg, conn.negotiated), msg
            assert data == msg.payload()
        if isinstance(msg, m.DeviceDisconnect):  # the library (guest) acks by itself, if we have the cap
            back = conn.receive_data(lib.take_output())
            want = [Packet(0, m.DeviceDisconnectAck())] if conn.has_cap(Cap.DEVICE_DISCONNECT_ACK) else []
            assert back == want
    lib.close()


@pytest.mark.parametrize("caps", CAPS, ids=list(CAPS))
@pytest.mark.parametrize("role", [GUEST, HOST], ids=["guest", "host"])
def test_library_packets_parse_in_ours_byte_for_byte(role: int, caps: str) -> None:
    """The library sends each message of its role; we parse the same values, and a connection of
    ours in its role packs the very same bytes or refuses when it refuses."""
    ours, libs = CAPS[caps]
    conn, lib = handshake(role, ours, libs)
    lib_role = HOST if role == GUEST else GUEST
    mirror = UsbRedirConnection(
        lib_role, "libusbredirparser oracle", libs | (caps_mask(Cap.DEVICE_DISCONNECT_ACK) if lib_role == GUEST else 0)
    )
    peer = UsbRedirConnection(role, "ours", ours)
    peer.receive_data(mirror.data_to_send())
    mirror.receive_data(peer.data_to_send())
    ids = 0x1_2345_6789 if conn.ids_64bit else 0x1234_5678
    for n, msg in enumerate(HOST_MSGS if role == GUEST else GUEST_MSGS):
        id = 0 if isinstance(msg, NO_ID) else ids + n
        if isinstance(msg, m.BulkPacket) and msg.length > 0xFFFF and not mirror.negotiated.bulk_length_32:
            with pytest.raises(ValueError):  # the library would send the low 16 bits of the length
                mirror.send(msg, id)
            continue
        lib.errors.clear()
        lib.send(msg, id)
        out = lib.take_output()
        if not out:
            with pytest.raises(ValueError):
                mirror.send(msg, id)
            continue
        mirror.send(msg, id)
        assert mirror.data_to_send() == out, msg
        packets = conn.receive_data(out)
        assert packets == [Packet(id, normalized(msg, conn.negotiated))], msg
    lib.close()


def test_same_refusals_without_caps() -> None:
    """With no caps on either side: the library drops filter, bulk receiving and long bulk packets,
    and so do we."""
    conn, lib = handshake(GUEST, 0, 0)
    for msg in (
        m.FilterFilter("-1,-1,-1,-1,1"),
        m.FilterReject(),
        m.StartBulkReceiving(0, 512, 0x81, 1),
        m.BulkPacket(0x02, 0, 70000, 0, bytes(70000)),
    ):
        with pytest.raises(ValueError):
            conn.send(msg, 1)
    lib.close()


@settings(max_examples=150, deadline=None)
@given(
    ep=st.integers(0, 255),
    status=st.integers(0, 6),
    length=st.integers(0, 3000),
    stream=st.integers(0, 2**32 - 1),
    id=st.integers(0, 2**64 - 1),
    request=st.integers(0, 255),
    value=st.integers(0, 0xFFFF),
)
def test_random_data_packets_agree(
    ep: int, status: int, length: int, stream: int, id: int, request: int, value: int
) -> None:
    conn, lib = handshake(GUEST, GUEST_CAPS, GUEST_CAPS)
    is_in = bool(ep & 0x80)
    data = b"" if is_in else bytes(i & 0xFF for i in range(length))
    for msg in (
        m.BulkPacket(ep, status, length, stream, data),
        m.ControlPacket(ep, request, ep & 0x80, status, value, value ^ 0xFFFF, length, data),
        m.InterruptPacket(ep, status, length, data),
    ):
        try:
            conn.send(msg, id)
        except ValueError:
            assert isinstance(msg, m.InterruptPacket) and is_in  # interrupt IN is start_interrupt_receiving's
            continue
        assert lib.feed(conn.data_to_send()) == 0 and lib.errors == []
        t, got_id, fields, got = lib.got[-1]
        assert (t, got_id, got) == (msg.TYPE, id, data)
        assert o.trim(t, fields, conn.negotiated) == o.expected_fields(msg, conn.negotiated)
    lib.close()


# --- filter -----------------------------------------------------------------------------------------

NUM = st.one_of(
    st.integers(-2, 300).map(str),
    st.integers(0, 0x1FFFF).map(hex),
    st.integers(0, 0o777).map(lambda v: "0" + format(v, "o")),
    st.sampled_from(["-1", " 5", "\t0x10", "+3", "0x", "08", "1a", "", "-0x1", "5 ", "x"]),
)


@st.composite
def filter_strings(draw: Any) -> str:
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        tokens = draw(st.lists(NUM, min_size=3, max_size=6))
        rules.append(draw(st.sampled_from([",", ",,"])).join(tokens))
    return draw(st.sampled_from(["|", "||"])).join(rules) + draw(st.sampled_from(["", "|"]))


@settings(max_examples=400, deadline=None)
@given(text=filter_strings())
def test_filter_strings_parse_as_usbredirfilter(text: str) -> None:
    want = o.lib_string_to_rules(text)
    try:
        got = parse_filter(text)
    except ValueError:
        assert want is None, text
        return
    assert got == want, text


RULES = st.lists(
    st.builds(
        FilterRule,
        st.sampled_from([-1, 0, 3, 8, 0xFF]),
        st.sampled_from([-1, 0x1234, 0x2B23]),
        st.sampled_from([-1, 0x5678, 0xCDCD]),
        st.sampled_from([-1, 0x0100, 0x0200]),
        st.booleans(),
    ),
    max_size=5,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(
    rules=RULES,
    device_class=st.sampled_from([0, 3, 8, 0xEF, 0xFF]),
    interfaces=st.lists(
        st.tuples(st.sampled_from([3, 8, 0xFF]), st.sampled_from([0, 1, 6]), st.sampled_from([0, 1, 0x50])), max_size=3
    ),
    vid=st.sampled_from([0x1234, 0x2B23]),
    pid=st.sampled_from([0x5678, 0xCDCD]),
    bcd=st.sampled_from([0x0100, 0x0200]),
    flags=st.integers(0, 3),
)
def test_filter_rules_and_check_as_usbredirfilter(
    rules: tuple[FilterRule, ...],
    device_class: int,
    interfaces: list[tuple[int, int, int]],
    vid: int,
    pid: int,
    bcd: int,
    flags: int,
) -> None:
    if rules:
        text = filter_to_string(rules)
        assert text == o.lib_rules_to_string(rules)
        assert parse_filter(text) == rules
    got = check_filter(
        rules,
        device_class,
        interfaces,
        vid,
        pid,
        bcd,
        default_allow=bool(flags & 1),
        dont_skip_non_boot_hid=bool(flags & 2),
    )
    assert got == o.lib_check(rules, device_class, interfaces, vid, pid, bcd, flags)
