"""libusbredirparser (usbredir 0.13, Debian ``libusbredirparser1``) through ctypes: a protocol oracle.

:class:`LibParser` wraps one ``struct usbredirparser`` (``priv`` then the callback pointers in
``usbredirparser.h`` order) as either role; bytes go in with :meth:`LibParser.feed` and out with
:meth:`LibParser.take_output`; every packet it parses is recorded as ``(type, id, fields, data)``
with the fields read through ctypes copies of the ``usbredirproto.h`` structs. :func:`to_c` builds
those structs from this project's messages for the ``usbredirparser_send_*`` functions.
The filter functions are wrapped too (:func:`lib_string_to_rules`, :func:`lib_rules_to_string`,
:func:`lib_check`). :data:`LIB` is None when the library is not installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from spiceserver.proto import usbredir_messages as m
from spiceserver.proto.usbredir import FilterRule
from spiceserver.proto.usbredir_messages import MsgType as T


def _load() -> ctypes.CDLL | None:
    for name in ("libusbredirparser.so.1", ctypes.util.find_library("usbredirparser")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    return None


LIB = _load()

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
vp = ctypes.c_void_p

FIELDS: dict[int, list[tuple[str, Any]]] = {
    T.HELLO: [("version", ctypes.c_char * 64)],
    T.DEVICE_CONNECT: [
        ("speed", u8),
        ("device_class", u8),
        ("device_subclass", u8),
        ("device_protocol", u8),
        ("vendor_id", u16),
        ("product_id", u16),
        ("device_version_bcd", u16),
    ],
    T.INTERFACE_INFO: [
        ("interface_count", u32),
        ("interface", u8 * 32),
        ("interface_class", u8 * 32),
        ("interface_subclass", u8 * 32),
        ("interface_protocol", u8 * 32),
    ],
    T.EP_INFO: [
        ("type", u8 * 32),
        ("interval", u8 * 32),
        ("interface", u8 * 32),
        ("max_packet_size", u16 * 32),
        ("max_streams", u32 * 32),
    ],
    T.SET_CONFIGURATION: [("configuration", u8)],
    T.CONFIGURATION_STATUS: [("status", u8), ("configuration", u8)],
    T.SET_ALT_SETTING: [("interface", u8), ("alt", u8)],
    T.GET_ALT_SETTING: [("interface", u8)],
    T.ALT_SETTING_STATUS: [("status", u8), ("interface", u8), ("alt", u8)],
    T.START_ISO_STREAM: [("endpoint", u8), ("pkts_per_urb", u8), ("no_urbs", u8)],
    T.STOP_ISO_STREAM: [("endpoint", u8)],
    T.ISO_STREAM_STATUS: [("status", u8), ("endpoint", u8)],
    T.START_INTERRUPT_RECEIVING: [("endpoint", u8)],
    T.STOP_INTERRUPT_RECEIVING: [("endpoint", u8)],
    T.INTERRUPT_RECEIVING_STATUS: [("status", u8), ("endpoint", u8)],
    T.ALLOC_BULK_STREAMS: [("endpoints", u32), ("no_streams", u32)],
    T.FREE_BULK_STREAMS: [("endpoints", u32)],
    T.BULK_STREAMS_STATUS: [("endpoints", u32), ("no_streams", u32), ("status", u8)],
    T.START_BULK_RECEIVING: [("stream_id", u32), ("bytes_per_transfer", u32), ("endpoint", u8), ("no_transfers", u8)],
    T.STOP_BULK_RECEIVING: [("stream_id", u32), ("endpoint", u8)],
    T.BULK_RECEIVING_STATUS: [("stream_id", u32), ("endpoint", u8), ("status", u8)],
    T.CONTROL_PACKET: [
        ("endpoint", u8),
        ("request", u8),
        ("requesttype", u8),
        ("status", u8),
        ("value", u16),
        ("index", u16),
        ("length", u16),
    ],
    T.BULK_PACKET: [("endpoint", u8), ("status", u8), ("length", u16), ("stream_id", u32), ("length_high", u16)],
    T.ISO_PACKET: [("endpoint", u8), ("status", u8), ("length", u16)],
    T.INTERRUPT_PACKET: [("endpoint", u8), ("status", u8), ("length", u16)],
    T.BUFFERED_BULK_PACKET: [("stream_id", u32), ("length", u32), ("endpoint", u8), ("status", u8)],
}

STRUCTS: dict[int, type[ctypes.Structure]] = {
    t: type(f"H{int(t)}", (ctypes.Structure,), {"_pack_": 1, "_fields_": f}) for t, f in FIELDS.items()
}


class FilterRuleC(ctypes.Structure):
    _fields_ = [
        ("device_class", ctypes.c_int),
        ("vendor_id", ctypes.c_int),
        ("product_id", ctypes.c_int),
        ("device_version_bcd", ctypes.c_int),
        ("allow", ctypes.c_int),
    ]


# callback slots of struct usbredirparser, in order: (name, type it reports or None, shape)
# shapes: "h" (priv, hdr), "-" (priv), "ih" (priv, id, hdr), "i" (priv, id), "ihd" (priv, id, hdr, data, len)
SLOTS: list[tuple[str, int | None, str]] = [
    ("log", None, "log"),
    ("read", None, "read"),
    ("write", None, "write"),
    ("device_connect", T.DEVICE_CONNECT, "h"),
    ("device_disconnect", T.DEVICE_DISCONNECT, "-"),
    ("reset", T.RESET, "-"),
    ("interface_info", T.INTERFACE_INFO, "h"),
    ("ep_info", T.EP_INFO, "h"),
    ("set_configuration", T.SET_CONFIGURATION, "ih"),
    ("get_configuration", T.GET_CONFIGURATION, "i"),
    ("configuration_status", T.CONFIGURATION_STATUS, "ih"),
    ("set_alt_setting", T.SET_ALT_SETTING, "ih"),
    ("get_alt_setting", T.GET_ALT_SETTING, "ih"),
    ("alt_setting_status", T.ALT_SETTING_STATUS, "ih"),
    ("start_iso_stream", T.START_ISO_STREAM, "ih"),
    ("stop_iso_stream", T.STOP_ISO_STREAM, "ih"),
    ("iso_stream_status", T.ISO_STREAM_STATUS, "ih"),
    ("start_interrupt_receiving", T.START_INTERRUPT_RECEIVING, "ih"),
    ("stop_interrupt_receiving", T.STOP_INTERRUPT_RECEIVING, "ih"),
    ("interrupt_receiving_status", T.INTERRUPT_RECEIVING_STATUS, "ih"),
    ("alloc_bulk_streams", T.ALLOC_BULK_STREAMS, "ih"),
    ("free_bulk_streams", T.FREE_BULK_STREAMS, "ih"),
    ("bulk_streams_status", T.BULK_STREAMS_STATUS, "ih"),
    ("cancel_data_packet", T.CANCEL_DATA_PACKET, "i"),
    ("control_packet", T.CONTROL_PACKET, "ihd"),
    ("bulk_packet", T.BULK_PACKET, "ihd"),
    ("iso_packet", T.ISO_PACKET, "ihd"),
    ("interrupt_packet", T.INTERRUPT_PACKET, "ihd"),
    ("alloc_lock", None, "null"),
    ("lock", None, "null"),
    ("unlock", None, "null"),
    ("free_lock", None, "null"),
    ("hello", T.HELLO, "h"),
    ("filter_reject", T.FILTER_REJECT, "-"),
    ("filter_filter", T.FILTER_FILTER, "rules"),
    ("device_disconnect_ack", T.DEVICE_DISCONNECT_ACK, "-"),
    ("start_bulk_receiving", T.START_BULK_RECEIVING, "ih"),
    ("stop_bulk_receiving", T.STOP_BULK_RECEIVING, "ih"),
    ("bulk_receiving_status", T.BULK_RECEIVING_STATUS, "ih"),
    ("buffered_bulk_packet", T.BUFFERED_BULK_PACKET, "ihd"),
]

CB = {
    "log": ctypes.CFUNCTYPE(None, vp, ctypes.c_int, ctypes.c_char_p),
    "read": ctypes.CFUNCTYPE(ctypes.c_int, vp, ctypes.POINTER(u8), ctypes.c_int),
    "write": ctypes.CFUNCTYPE(ctypes.c_int, vp, ctypes.POINTER(u8), ctypes.c_int),
    "h": ctypes.CFUNCTYPE(None, vp, vp),
    "-": ctypes.CFUNCTYPE(None, vp),
    "ih": ctypes.CFUNCTYPE(None, vp, u64, vp),
    "i": ctypes.CFUNCTYPE(None, vp, u64),
    "ihd": ctypes.CFUNCTYPE(None, vp, u64, vp, ctypes.POINTER(u8), ctypes.c_int),
    "rules": ctypes.CFUNCTYPE(None, vp, ctypes.POINTER(FilterRuleC), ctypes.c_int),
    "null": vp,
}


class ParserStruct(ctypes.Structure):
    _fields_ = [("priv", vp)] + [(name + "_func", CB[shape]) for name, _, shape in SLOTS]


if LIB is not None:
    LIB.usbredirparser_create.restype = ctypes.POINTER(ParserStruct)
    LIB.usbredirparser_init.argtypes = [
        ctypes.POINTER(ParserStruct),
        ctypes.c_char_p,
        ctypes.POINTER(u32),
        ctypes.c_int,
        ctypes.c_int,
    ]
    LIB.usbredirparser_do_read.argtypes = [ctypes.POINTER(ParserStruct)]
    LIB.usbredirparser_do_write.argtypes = [ctypes.POINTER(ParserStruct)]
    LIB.usbredirparser_destroy.argtypes = [ctypes.POINTER(ParserStruct)]
    LIB.usbredirparser_peer_has_cap.argtypes = [ctypes.POINTER(ParserStruct), ctypes.c_int]
    LIB.usbredirparser_free_packet_data.argtypes = [ctypes.POINTER(ParserStruct), vp]
    LIB.usbredirfilter_string_to_rules.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.POINTER(FilterRuleC)),
        ctypes.POINTER(ctypes.c_int),
    ]
    LIB.usbredirfilter_rules_to_string.argtypes = [
        ctypes.POINTER(FilterRuleC),
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_char_p,
    ]
    LIB.usbredirfilter_rules_to_string.restype = vp
    LIB.usbredirfilter_free.argtypes = [vp]
    LIB.usbredirfilter_check.argtypes = [
        ctypes.POINTER(FilterRuleC),
        ctypes.c_int,
        u8,
        u8,
        u8,
        ctypes.POINTER(u8),
        ctypes.POINTER(u8),
        ctypes.POINTER(u8),
        ctypes.c_int,
        u16,
        u16,
        u16,
        ctypes.c_int,
    ]


def struct_dict(t: int, obj: ctypes.Structure) -> dict[str, Any]:
    """A header struct's fields (arrays as tuples)."""
    out: dict[str, Any] = {}
    for name, _ in FIELDS[t]:
        value = getattr(obj, name)
        out[name] = tuple(value) if isinstance(value, ctypes.Array) and not isinstance(value, bytes) else value
    return out


class LibParser:
    """One libusbredirparser instance (see the module docstring)."""

    def __init__(self, host: bool, caps: int, version: bytes = b"libusbredirparser oracle") -> None:
        assert LIB is not None
        self.lib = LIB
        self.p = LIB.usbredirparser_create()
        self.input = bytearray()
        self.output = bytearray()
        self.got: list[tuple[int, int, dict[str, Any], bytes]] = []
        self.errors: list[str] = []
        self._keep: list[Any] = []
        s = self.p.contents
        for name, t, shape in SLOTS:
            if shape == "null":
                continue
            setattr(s, name + "_func", self._make(name, t, shape))
        caps_arr = (u32 * 1)(caps)
        LIB.usbredirparser_init(self.p, version, caps_arr, 1, 1 if host else 0)

    def _make(self, name: str, t: int | None, shape: str) -> Any:
        if shape == "log":

            def fn_log(priv: Any, level: int, msg: bytes) -> None:
                if level <= 2:  # error, warning
                    self.errors.append(msg.decode(errors="replace"))

            cb: Any = CB["log"](fn_log)
        elif shape == "read":

            def fn_read(priv: Any, buf: Any, count: int) -> int:
                n = min(count, len(self.input))
                if n:
                    ctypes.memmove(buf, bytes(self.input[:n]), n)
                    del self.input[:n]
                return n

            cb = CB["read"](fn_read)
        elif shape == "write":

            def fn_write(priv: Any, buf: Any, count: int) -> int:
                self.output += ctypes.string_at(buf, count)
                return count

            cb = CB["write"](fn_write)
        elif shape == "h":

            def fn_h(priv: Any, hdr: Any) -> None:
                assert t is not None
                self.got.append(
                    (
                        t,
                        0,
                        struct_dict(t, STRUCTS[t].from_buffer_copy(ctypes.string_at(hdr, ctypes.sizeof(STRUCTS[t])))),
                        b"",
                    )
                )

            cb = CB["h"](fn_h)
        elif shape == "-":

            def fn_none(priv: Any) -> None:
                assert t is not None
                self.got.append((t, 0, {}, b""))

            cb = CB["-"](fn_none)
        elif shape == "ih":

            def fn_ih(priv: Any, id: int, hdr: Any) -> None:
                assert t is not None
                self.got.append(
                    (
                        t,
                        id,
                        struct_dict(t, STRUCTS[t].from_buffer_copy(ctypes.string_at(hdr, ctypes.sizeof(STRUCTS[t])))),
                        b"",
                    )
                )

            cb = CB["ih"](fn_ih)
        elif shape == "i":

            def fn_i(priv: Any, id: int) -> None:
                assert t is not None
                self.got.append((t, id, {}, b""))

            cb = CB["i"](fn_i)
        elif shape == "ihd":

            def fn_ihd(priv: Any, id: int, hdr: Any, data: Any, length: int) -> None:
                assert t is not None
                raw = ctypes.string_at(data, length) if length else b""
                fields = struct_dict(t, STRUCTS[t].from_buffer_copy(ctypes.string_at(hdr, ctypes.sizeof(STRUCTS[t]))))
                self.got.append((t, id, fields, raw))
                if data:
                    self.lib.usbredirparser_free_packet_data(self.p, ctypes.cast(data, vp))

            cb = CB["ihd"](fn_ihd)
        else:  # rules

            def fn_rules(priv: Any, rules: Any, count: int) -> None:
                got = tuple(
                    FilterRule(r.device_class, r.vendor_id, r.product_id, r.device_version_bcd, bool(r.allow))
                    for r in (rules[i] for i in range(count))
                )
                self.got.append((T.FILTER_FILTER, 0, {"rules": got}, b""))
                self.lib.usbredirfilter_free(ctypes.cast(rules, vp))

            cb = CB["rules"](fn_rules)
        self._keep.append(cb)
        return cb

    def feed(self, data: bytes) -> int:
        """Parse ``data``; the last do_read result (0, or -2 on a parse error)."""
        self.input += data
        r = 0
        while self.input:
            r = self.lib.usbredirparser_do_read(self.p)
            if r < 0:
                break
        return int(r)

    def take_output(self) -> bytes:
        """What the parser queued (written out through our write callback)."""
        assert self.lib.usbredirparser_do_write(self.p) == 0
        out = bytes(self.output)
        self.output.clear()
        return out

    def peer_has_cap(self, cap: int) -> bool:
        return bool(self.lib.usbredirparser_peer_has_cap(self.p, cap))

    def send(self, msg: m.UsbRedirMessage, id: int = 0) -> None:
        """``usbredirparser_send_<type>`` with ``msg`` as its struct."""
        name = "usbredirparser_send_" + msg.TYPE.name.lower()
        fn = getattr(self.lib, name)
        if isinstance(msg, (m.DeviceDisconnect, m.Reset, m.FilterReject)):
            fn(self.p)
        elif isinstance(msg, (m.GetConfiguration, m.CancelDataPacket)):
            fn(self.p, u64(id))
        elif isinstance(msg, m.FilterFilter):
            rules = lib_string_to_rules(msg.rules)
            assert rules is not None
            arr = (FilterRuleC * max(1, len(rules)))(
                *[
                    FilterRuleC(r.device_class, r.vendor_id, r.product_id, r.device_version_bcd, int(r.allow))
                    for r in rules
                ]
            )
            fn(self.p, arr, len(rules))
        elif isinstance(msg, (m.DeviceConnect, m.InterfaceInfo, m.EpInfo)):
            fn(self.p, ctypes.byref(to_c(msg)))
        elif msg.HAS_DATA:
            data = msg.payload()
            buf = (u8 * max(1, len(data))).from_buffer_copy(data or b"\0")
            fn(self.p, u64(id), ctypes.byref(to_c(msg)), buf if data else None, len(data))
        else:
            fn(self.p, u64(id), ctypes.byref(to_c(msg)))

    def close(self) -> None:
        self.lib.usbredirparser_destroy(self.p)


def to_c(msg: m.UsbRedirMessage) -> ctypes.Structure:
    """The usbredirproto.h struct of ``msg`` (all fields; the library sends the negotiated size)."""
    t = msg.TYPE
    cls = STRUCTS[t]
    if isinstance(msg, m.InterfaceInfo):
        pad = lambda v: (u8 * 32)(*v)  # noqa: E731
        return cls(
            len(msg.interface),
            pad(msg.interface),
            pad(msg.interface_class),
            pad(msg.interface_subclass),
            pad(msg.interface_protocol),
        )
    if isinstance(msg, m.EpInfo):
        return cls(
            (u8 * 32)(*msg.type),
            (u8 * 32)(*msg.interval),
            (u8 * 32)(*msg.interface),
            (u16 * 32)(*msg.max_packet_size),
            (u32 * 32)(*msg.max_streams),
        )
    if isinstance(msg, m.BulkPacket):
        return cls(msg.endpoint, msg.status, msg.length & 0xFFFF, msg.stream_id, msg.length >> 16)
    return cls(*(getattr(msg, name) for name, _ in FIELDS[t]))


def expected_fields(msg: m.UsbRedirMessage, neg: m.Negotiated) -> dict[str, Any]:
    """The fields the library should report for ``msg`` sent under ``neg`` (its struct, with what the
    negotiated size leaves out dropped)."""
    if isinstance(
        msg,
        (m.DeviceDisconnect, m.Reset, m.FilterReject, m.GetConfiguration, m.CancelDataPacket, m.DeviceDisconnectAck),
    ):
        return {}
    d = struct_dict(msg.TYPE, to_c(msg))
    return trim(msg.TYPE, d, neg)


def trim(t: int, d: dict[str, Any], neg: m.Negotiated) -> dict[str, Any]:
    """Drop the fields the negotiated layout does not carry."""
    d = dict(d)
    if t == T.DEVICE_CONNECT and not neg.device_version:
        d.pop("device_version_bcd")
    if t == T.EP_INFO and not neg.bulk_streams:
        d.pop("max_streams")
        if not neg.ep_max_packet_size:
            d.pop("max_packet_size")
    if t == T.BULK_PACKET and not neg.bulk_length_32:
        d["length_high"] = 0  # not on the wire; the library zeroes it on receive
    if t == T.INTERFACE_INFO:
        n = d["interface_count"]
        for k in ("interface", "interface_class", "interface_subclass", "interface_protocol"):
            d[k] = d[k][:n]
    return d


def lib_string_to_rules(text: str) -> tuple[FilterRule, ...] | None:
    """``usbredirfilter_string_to_rules(text, ",", "|")``; None on an error."""
    assert LIB is not None
    rules = ctypes.POINTER(FilterRuleC)()
    count = ctypes.c_int()
    r = LIB.usbredirfilter_string_to_rules(text.encode(), b",", b"|", ctypes.byref(rules), ctypes.byref(count))
    if r:
        return None
    out = tuple(
        FilterRule(
            rules[i].device_class,
            rules[i].vendor_id,
            rules[i].product_id,
            rules[i].device_version_bcd,
            bool(rules[i].allow),
        )
        for i in range(count.value)
    )
    LIB.usbredirfilter_free(ctypes.cast(rules, vp))
    return out


def _rules_c(rules: tuple[FilterRule, ...]) -> Any:
    return (FilterRuleC * max(1, len(rules)))(
        *[FilterRuleC(r.device_class, r.vendor_id, r.product_id, r.device_version_bcd, int(r.allow)) for r in rules]
    )


def lib_rules_to_string(rules: tuple[FilterRule, ...]) -> str:
    """``usbredirfilter_rules_to_string(rules, ",", "|")``."""
    assert LIB is not None
    ptr = LIB.usbredirfilter_rules_to_string(_rules_c(rules), len(rules), b",", b"|")
    assert ptr
    text = ctypes.string_at(ptr).decode()
    LIB.usbredirfilter_free(ptr)
    return text


def lib_check(
    rules: tuple[FilterRule, ...],
    device_class: int,
    interfaces: list[tuple[int, int, int]],
    vid: int,
    pid: int,
    bcd: int,
    flags: int = 0,
) -> int:
    """``usbredirfilter_check``: 0, -EPERM (-1) or -ENOENT (-2)."""
    assert LIB is not None
    n = len(interfaces)
    cls = (u8 * max(1, n))(*[i[0] for i in interfaces])
    sub = (u8 * max(1, n))(*[i[1] for i in interfaces])
    proto = (u8 * max(1, n))(*[i[2] for i in interfaces])
    return int(
        LIB.usbredirfilter_check(
            _rules_c(rules), len(rules), device_class, 0, 0, cls, sub, proto, n, vid, pid, bcd, flags
        )
    )
