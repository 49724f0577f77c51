"""The usbredir messages: numbers, caps, and one frozen dataclass per packet type (sans-IO).

Counterpart of usbredir ``usbredirparser/usbredirproto.h`` (the packed structs) and of the
per-type rules in ``usbredirparser/usbredirparser.c`` (``usbredirparser_get_type_header_len``,
``usbredirparser_verify_type_header``); the protocol text is usbredir
``docs/usb-redirection-protocol.txt``. The connection that frames them is
:mod:`spiceserver.proto.usbredir`.

Every packet is ``header{u32 type, u32 length, id}`` (id u32, or u64 once both peers announced
``64bits_ids``), then a type-specific header of a fixed size, then data for the types that carry
it. Integers are little endian. Sizes that depend on the negotiated caps (a cap counts when both
peers have it) are :class:`Negotiated` here:

* ``device_connect`` is 8 bytes, or 10 with ``device_version_bcd`` (``connect_device_version``);
* ``ep_info`` is 96 bytes (type, interval, interface), 160 with ``max_packet_size``
  (``ep_info_max_packet_size``), 288 with ``max_streams`` too (``bulk_streams``);
* ``bulk_packet`` is 8 bytes (16-bit length), or 10 with ``length_high`` (``32bits_bulk_length``).

Each class records who may send it (:data:`HOST`, :data:`GUEST` or both): the usb-host owns the
device (the SPICE client: spice-gtk's usbredirhost), the usb-guest drives it (QEMU
``hw/usb/redirect.c``; this server).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

__all__ = [
    "MsgType",
    "Cap",
    "Status",
    "EpType",
    "Speed",
    "HOST",
    "GUEST",
    "BOTH",
    "Negotiated",
    "UsbRedirMessage",
    "Hello",
    "DeviceConnect",
    "DeviceDisconnect",
    "Reset",
    "InterfaceInfo",
    "EpInfo",
    "SetConfiguration",
    "GetConfiguration",
    "ConfigurationStatus",
    "SetAltSetting",
    "GetAltSetting",
    "AltSettingStatus",
    "StartIsoStream",
    "StopIsoStream",
    "IsoStreamStatus",
    "StartInterruptReceiving",
    "StopInterruptReceiving",
    "InterruptReceivingStatus",
    "AllocBulkStreams",
    "FreeBulkStreams",
    "BulkStreamsStatus",
    "CancelDataPacket",
    "FilterReject",
    "FilterFilter",
    "DeviceDisconnectAck",
    "StartBulkReceiving",
    "StopBulkReceiving",
    "BulkReceivingStatus",
    "ControlPacket",
    "BulkPacket",
    "IsoPacket",
    "InterruptPacket",
    "BufferedBulkPacket",
    "MESSAGE_CLASSES",
    "ep_index",
]


class MsgType(IntEnum):
    """usbredir packet types (``usb_redir_*`` in usbredirproto.h)."""

    HELLO = 0
    DEVICE_CONNECT = 1
    DEVICE_DISCONNECT = 2
    RESET = 3
    INTERFACE_INFO = 4
    EP_INFO = 5
    SET_CONFIGURATION = 6
    GET_CONFIGURATION = 7
    CONFIGURATION_STATUS = 8
    SET_ALT_SETTING = 9
    GET_ALT_SETTING = 10
    ALT_SETTING_STATUS = 11
    START_ISO_STREAM = 12
    STOP_ISO_STREAM = 13
    ISO_STREAM_STATUS = 14
    START_INTERRUPT_RECEIVING = 15
    STOP_INTERRUPT_RECEIVING = 16
    INTERRUPT_RECEIVING_STATUS = 17
    ALLOC_BULK_STREAMS = 18
    FREE_BULK_STREAMS = 19
    BULK_STREAMS_STATUS = 20
    CANCEL_DATA_PACKET = 21
    FILTER_REJECT = 22
    FILTER_FILTER = 23
    DEVICE_DISCONNECT_ACK = 24
    START_BULK_RECEIVING = 25
    STOP_BULK_RECEIVING = 26
    BULK_RECEIVING_STATUS = 27
    CONTROL_PACKET = 100
    BULK_PACKET = 101
    ISO_PACKET = 102
    INTERRUPT_PACKET = 103
    BUFFERED_BULK_PACKET = 104


class Cap(IntEnum):
    """usbredir capability bits (``usb_redir_cap_*``), in the hello's first caps word."""

    BULK_STREAMS = 0
    CONNECT_DEVICE_VERSION = 1
    FILTER = 2
    DEVICE_DISCONNECT_ACK = 3
    EP_INFO_MAX_PACKET_SIZE = 4
    IDS_64BITS = 5
    BULK_LENGTH_32BITS = 6
    BULK_RECEIVING = 7


class Status(IntEnum):
    """Transfer and request status (``usb_redir_success`` ...)."""

    SUCCESS = 0
    CANCELLED = 1
    INVAL = 2
    IOERROR = 3
    STALL = 4
    TIMEOUT = 5
    BABBLE = 6


class EpType(IntEnum):
    """Endpoint types in ep_info (the first four match the USB spec)."""

    CONTROL = 0
    ISO = 1
    BULK = 2
    INTERRUPT = 3
    INVALID = 255


class Speed(IntEnum):
    """Device speeds in device_connect."""

    LOW = 0
    FULL = 1
    HIGH = 2
    SUPER = 3
    UNKNOWN = 255


#: who may send a message type: the usb-host (owns the device), the usb-guest, or both
HOST = 1
GUEST = 2
BOTH = HOST | GUEST


def ep_index(endpoint: int) -> int:
    """The ep_info array index of an endpoint address: ``((ep & 0x80) >> 3) | (ep & 0x0f)``."""
    return ((endpoint & 0x80) >> 3) | (endpoint & 0x0F)


@dataclass(frozen=True)
class Negotiated:
    """The caps both peers announced, as far as they change a struct's size (see the module docstring)."""

    device_version: bool = False
    ep_max_packet_size: bool = False
    bulk_streams: bool = False
    bulk_length_32: bool = False


def _u8s(values: tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    if len(values) > n:
        raise ValueError(f"{name}: at most {n} values")
    return tuple(values) + (0,) * (n - len(values))


@dataclass(frozen=True)
class UsbRedirMessage:
    """Base of the usbredir messages: its type, who may send it, and its fixed header layout.

    Subclasses with a plain layout list their struct fields in ``FIELDS`` (in wire order) and the
    struct format in ``FORMAT``; the others override :meth:`header_struct`, :meth:`pack_header`
    and :meth:`from_header`.
    """

    TYPE: ClassVar[MsgType]
    SENDER: ClassVar[int]
    FORMAT: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()
    #: the packet may carry data after its type header
    HAS_DATA: ClassVar[bool] = False

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type-specific header's layout under ``neg``."""
        return struct.Struct("<" + cls.FORMAT)

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type-specific header (ValueError: a field out of range)."""
        try:
            return self.header_struct(neg).pack(*(getattr(self, f) for f in self.FIELDS))
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None

    def payload(self) -> bytes:
        """The data after the type header."""
        return b""

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> UsbRedirMessage:
        """Build the message from its type header (exactly the struct's size) and data."""
        values = cls.header_struct(neg).unpack(header)
        return cls(*values)


@dataclass(frozen=True)
class Hello(UsbRedirMessage):
    """hello: the peer's version string (64 bytes, NUL padded) and caps words (the first one is used)."""

    TYPE = MsgType.HELLO
    SENDER = BOTH
    HAS_DATA = True
    version: str
    caps: int

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type header's layout under ``neg``."""
        return struct.Struct("<64s")

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type header."""
        raw = self.version.encode("utf-8")[:63]
        return raw + b"\0" * (64 - len(raw))

    def payload(self) -> bytes:
        """The data after the type header."""
        return struct.pack("<I", self.caps & 0xFFFFFFFF)

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> Hello:
        """The message from its type header and data."""
        version = header.split(b"\0", 1)[0].decode("utf-8", "replace")
        caps = struct.unpack_from("<I", data)[0] if len(data) >= 4 else 0
        return cls(version, caps)


@dataclass(frozen=True)
class DeviceConnect(UsbRedirMessage):
    """device_connect: a device is there (``device_version_bcd`` only with connect_device_version)."""

    TYPE = MsgType.DEVICE_CONNECT
    SENDER = HOST
    FIELDS = (
        "speed",
        "device_class",
        "device_subclass",
        "device_protocol",
        "vendor_id",
        "product_id",
        "device_version_bcd",
    )
    speed: int
    device_class: int
    device_subclass: int
    device_protocol: int
    vendor_id: int
    product_id: int
    device_version_bcd: int = 0

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type header's layout under ``neg``."""
        return struct.Struct("<BBBBHHH" if neg.device_version else "<BBBBHH")

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type header."""
        fields = self.FIELDS if neg.device_version else self.FIELDS[:-1]
        try:
            return self.header_struct(neg).pack(*(getattr(self, f) for f in fields))
        except struct.error as exc:
            raise ValueError(f"DeviceConnect: {exc}") from None


@dataclass(frozen=True)
class DeviceDisconnect(UsbRedirMessage):
    """device_disconnect: the device went away (the guest acks it with device_disconnect_ack)."""

    TYPE = MsgType.DEVICE_DISCONNECT
    SENDER = HOST


@dataclass(frozen=True)
class Reset(UsbRedirMessage):
    """reset: reset the device."""

    TYPE = MsgType.RESET
    SENDER = GUEST


@dataclass(frozen=True)
class InterfaceInfo(UsbRedirMessage):
    """interface_info: the interfaces of the current configuration (``count`` entries of the 32 used)."""

    TYPE = MsgType.INTERFACE_INFO
    SENDER = HOST
    interface: tuple[int, ...]
    interface_class: tuple[int, ...]
    interface_subclass: tuple[int, ...]
    interface_protocol: tuple[int, ...]

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type header's layout under ``neg``."""
        return struct.Struct("<I32s32s32s32s")

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type header."""
        n = len(self.interface)
        cols = (self.interface, self.interface_class, self.interface_subclass, self.interface_protocol)
        if n > 32 or any(len(c) != n for c in cols):
            raise ValueError("InterfaceInfo: 0 to 32 interfaces, four columns of the same length")
        try:
            return struct.pack("<I", n) + b"".join(bytes(_u8s(c, 32, "interface")) for c in cols)
        except ValueError as exc:
            raise ValueError(f"InterfaceInfo: {exc}") from None

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> InterfaceInfo:
        """The message from its type header and data."""
        count, a, b, c, d = cls.header_struct(neg).unpack(header)
        if count > 32:
            raise ValueError(f"interface_count {count} > 32")
        return cls(tuple(a[:count]), tuple(b[:count]), tuple(c[:count]), tuple(d[:count]))


@dataclass(frozen=True)
class EpInfo(UsbRedirMessage):
    """ep_info: 32 endpoints by :func:`ep_index` (type 255: no such endpoint)."""

    TYPE = MsgType.EP_INFO
    SENDER = HOST
    type: tuple[int, ...]
    interval: tuple[int, ...]
    interface: tuple[int, ...]
    max_packet_size: tuple[int, ...] = (0,) * 32
    max_streams: tuple[int, ...] = (0,) * 32

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type header's layout under ``neg``."""
        fmt = "<32s32s32s"
        if neg.bulk_streams:
            fmt += "32H32I"
        elif neg.ep_max_packet_size:
            fmt += "32H"
        return struct.Struct(fmt)

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type header."""
        cols = (self.type, self.interval, self.interface, self.max_packet_size, self.max_streams)
        if any(len(c) != 32 for c in cols):
            raise ValueError("EpInfo: 32 values per column")
        try:
            out = bytes(self.type) + bytes(self.interval) + bytes(self.interface)
            if neg.bulk_streams or neg.ep_max_packet_size:
                out += struct.pack("<32H", *self.max_packet_size)
            if neg.bulk_streams:
                out += struct.pack("<32I", *self.max_streams)
        except (ValueError, struct.error) as exc:
            raise ValueError(f"EpInfo: {exc}") from None
        return out

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> EpInfo:
        """The message from its type header and data."""
        values = cls.header_struct(neg).unpack(header)
        mps: tuple[int, ...] = (0,) * 32
        streams: tuple[int, ...] = (0,) * 32
        if neg.bulk_streams or neg.ep_max_packet_size:
            mps = tuple(values[3:35])
        if neg.bulk_streams:
            streams = tuple(values[35:67])
        return cls(tuple(values[0]), tuple(values[1]), tuple(values[2]), mps, streams)


@dataclass(frozen=True)
class SetConfiguration(UsbRedirMessage):
    """set_configuration (answered by configuration_status)."""

    TYPE = MsgType.SET_CONFIGURATION
    SENDER = GUEST
    FORMAT = "B"
    FIELDS = ("configuration",)
    configuration: int


@dataclass(frozen=True)
class GetConfiguration(UsbRedirMessage):
    """get_configuration (answered by configuration_status)."""

    TYPE = MsgType.GET_CONFIGURATION
    SENDER = GUEST


@dataclass(frozen=True)
class ConfigurationStatus(UsbRedirMessage):
    """configuration_status: the answer to set/get_configuration."""

    TYPE = MsgType.CONFIGURATION_STATUS
    SENDER = HOST
    FORMAT = "BB"
    FIELDS = ("status", "configuration")
    status: int
    configuration: int


@dataclass(frozen=True)
class SetAltSetting(UsbRedirMessage):
    """set_alt_setting (answered by alt_setting_status)."""

    TYPE = MsgType.SET_ALT_SETTING
    SENDER = GUEST
    FORMAT = "BB"
    FIELDS = ("interface", "alt")
    interface: int
    alt: int


@dataclass(frozen=True)
class GetAltSetting(UsbRedirMessage):
    """get_alt_setting (answered by alt_setting_status)."""

    TYPE = MsgType.GET_ALT_SETTING
    SENDER = GUEST
    FORMAT = "B"
    FIELDS = ("interface",)
    interface: int


@dataclass(frozen=True)
class AltSettingStatus(UsbRedirMessage):
    """alt_setting_status: the answer to set/get_alt_setting."""

    TYPE = MsgType.ALT_SETTING_STATUS
    SENDER = HOST
    FORMAT = "BBB"
    FIELDS = ("status", "interface", "alt")
    status: int
    interface: int
    alt: int


@dataclass(frozen=True)
class StartIsoStream(UsbRedirMessage):
    """start_iso_stream."""

    TYPE = MsgType.START_ISO_STREAM
    SENDER = GUEST
    FORMAT = "BBB"
    FIELDS = ("endpoint", "pkts_per_urb", "no_urbs")
    endpoint: int
    pkts_per_urb: int
    no_urbs: int


@dataclass(frozen=True)
class StopIsoStream(UsbRedirMessage):
    """stop_iso_stream."""

    TYPE = MsgType.STOP_ISO_STREAM
    SENDER = GUEST
    FORMAT = "B"
    FIELDS = ("endpoint",)
    endpoint: int


@dataclass(frozen=True)
class IsoStreamStatus(UsbRedirMessage):
    """iso_stream_status."""

    TYPE = MsgType.ISO_STREAM_STATUS
    SENDER = HOST
    FORMAT = "BB"
    FIELDS = ("status", "endpoint")
    status: int
    endpoint: int


@dataclass(frozen=True)
class StartInterruptReceiving(UsbRedirMessage):
    """start_interrupt_receiving (IN endpoints only)."""

    TYPE = MsgType.START_INTERRUPT_RECEIVING
    SENDER = GUEST
    FORMAT = "B"
    FIELDS = ("endpoint",)
    endpoint: int


@dataclass(frozen=True)
class StopInterruptReceiving(UsbRedirMessage):
    """stop_interrupt_receiving (IN endpoints only)."""

    TYPE = MsgType.STOP_INTERRUPT_RECEIVING
    SENDER = GUEST
    FORMAT = "B"
    FIELDS = ("endpoint",)
    endpoint: int


@dataclass(frozen=True)
class InterruptReceivingStatus(UsbRedirMessage):
    """interrupt_receiving_status (IN endpoints only)."""

    TYPE = MsgType.INTERRUPT_RECEIVING_STATUS
    SENDER = HOST
    FORMAT = "BB"
    FIELDS = ("status", "endpoint")
    status: int
    endpoint: int


@dataclass(frozen=True)
class AllocBulkStreams(UsbRedirMessage):
    """alloc_bulk_streams (``endpoints``: a bitmask by :func:`ep_index`)."""

    TYPE = MsgType.ALLOC_BULK_STREAMS
    SENDER = GUEST
    FORMAT = "II"
    FIELDS = ("endpoints", "no_streams")
    endpoints: int
    no_streams: int


@dataclass(frozen=True)
class FreeBulkStreams(UsbRedirMessage):
    """free_bulk_streams."""

    TYPE = MsgType.FREE_BULK_STREAMS
    SENDER = GUEST
    FORMAT = "I"
    FIELDS = ("endpoints",)
    endpoints: int


@dataclass(frozen=True)
class BulkStreamsStatus(UsbRedirMessage):
    """bulk_streams_status."""

    TYPE = MsgType.BULK_STREAMS_STATUS
    SENDER = HOST
    FORMAT = "IIB"
    FIELDS = ("endpoints", "no_streams", "status")
    endpoints: int
    no_streams: int
    status: int


@dataclass(frozen=True)
class CancelDataPacket(UsbRedirMessage):
    """cancel_data_packet: cancel the data packet with this packet's id."""

    TYPE = MsgType.CANCEL_DATA_PACKET
    SENDER = GUEST


@dataclass(frozen=True)
class FilterReject(UsbRedirMessage):
    """filter_reject: the guest refuses the device (needs cap filter)."""

    TYPE = MsgType.FILTER_REJECT
    SENDER = GUEST


@dataclass(frozen=True)
class FilterFilter(UsbRedirMessage):
    """filter_filter: a usbredirfilter rule string (``,`` and ``|``), sent with its NUL (cap filter)."""

    TYPE = MsgType.FILTER_FILTER
    SENDER = BOTH
    HAS_DATA = True
    rules: str

    def payload(self) -> bytes:
        """The data after the type header."""
        raw = self.rules.encode("ascii")
        if b"\0" in raw:
            raise ValueError("FilterFilter: NUL in the rules")
        return raw + b"\0"

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> FilterFilter:
        """The message from its type header and data."""
        if not data or data[-1] != 0:
            raise ValueError("filter_filter data is not NUL terminated")
        text = data[:-1].split(b"\0", 1)[0]  # C reads up to the first NUL
        try:
            return cls(text.decode("ascii"))
        except UnicodeDecodeError:
            raise ValueError("filter_filter is not ASCII") from None


@dataclass(frozen=True)
class DeviceDisconnectAck(UsbRedirMessage):
    """device_disconnect_ack: the guest saw device_disconnect (needs cap device_disconnect_ack)."""

    TYPE = MsgType.DEVICE_DISCONNECT_ACK
    SENDER = GUEST


@dataclass(frozen=True)
class StartBulkReceiving(UsbRedirMessage):
    """start_bulk_receiving (cap bulk_receiving; IN endpoints only)."""

    TYPE = MsgType.START_BULK_RECEIVING
    SENDER = GUEST
    FORMAT = "IIBB"
    FIELDS = ("stream_id", "bytes_per_transfer", "endpoint", "no_transfers")
    stream_id: int
    bytes_per_transfer: int
    endpoint: int
    no_transfers: int


@dataclass(frozen=True)
class StopBulkReceiving(UsbRedirMessage):
    """stop_bulk_receiving (cap bulk_receiving; IN endpoints only)."""

    TYPE = MsgType.STOP_BULK_RECEIVING
    SENDER = GUEST
    FORMAT = "IB"
    FIELDS = ("stream_id", "endpoint")
    stream_id: int
    endpoint: int


@dataclass(frozen=True)
class BulkReceivingStatus(UsbRedirMessage):
    """bulk_receiving_status (cap bulk_receiving; IN endpoints only)."""

    TYPE = MsgType.BULK_RECEIVING_STATUS
    SENDER = HOST
    FORMAT = "IBB"
    FIELDS = ("stream_id", "endpoint", "status")
    stream_id: int
    endpoint: int
    status: int


@dataclass(frozen=True)
class ControlPacket(UsbRedirMessage):
    """control_packet: a control transfer; data goes with the request (OUT) or the reply (IN)."""

    TYPE = MsgType.CONTROL_PACKET
    SENDER = BOTH
    HAS_DATA = True
    FORMAT = "BBBBHHH"
    FIELDS = ("endpoint", "request", "requesttype", "status", "value", "index", "length")
    endpoint: int
    request: int
    requesttype: int
    status: int
    value: int
    index: int
    length: int
    data: bytes = b""

    def payload(self) -> bytes:
        """The data after the type header."""
        return self.data

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> ControlPacket:
        """The message from its type header and data."""
        v = cls.header_struct(neg).unpack(header)
        return cls(v[0], v[1], v[2], v[3], v[4], v[5], v[6], data)


@dataclass(frozen=True)
class BulkPacket(UsbRedirMessage):
    """bulk_packet: ``length`` is the whole 32-bit length (``length_high`` on the wire with 32bits_bulk_length)."""

    TYPE = MsgType.BULK_PACKET
    SENDER = BOTH
    HAS_DATA = True
    endpoint: int
    status: int
    length: int
    stream_id: int = 0
    data: bytes = b""

    @classmethod
    def header_struct(cls, neg: Negotiated) -> struct.Struct:
        """The type header's layout under ``neg``."""
        return struct.Struct("<BBHIH" if neg.bulk_length_32 else "<BBHI")

    def pack_header(self, neg: Negotiated) -> bytes:
        """The type header."""
        limit = 0xFFFFFFFF if neg.bulk_length_32 else 0xFFFF
        if not 0 <= self.length <= limit:
            raise ValueError(f"BulkPacket: length {self.length} over {limit} (32bits_bulk_length not negotiated?)")
        try:
            if neg.bulk_length_32:
                return struct.pack(
                    "<BBHIH", self.endpoint, self.status, self.length & 0xFFFF, self.stream_id, self.length >> 16
                )
            return struct.pack("<BBHI", self.endpoint, self.status, self.length, self.stream_id)
        except struct.error as exc:
            raise ValueError(f"BulkPacket: {exc}") from None

    def payload(self) -> bytes:
        """The data after the type header."""
        return self.data

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> BulkPacket:
        """The message from its type header and data."""
        if neg.bulk_length_32:
            ep, status, low, stream, high = struct.unpack("<BBHIH", header)
            return cls(ep, status, (high << 16) | low, stream, data)
        ep, status, low, stream = struct.unpack("<BBHI", header)
        return cls(ep, status, low, stream, data)


@dataclass(frozen=True)
class IsoPacket(UsbRedirMessage):
    """iso_packet: OUT data from the guest, IN data from the host (iso streams)."""

    TYPE = MsgType.ISO_PACKET
    SENDER = BOTH
    HAS_DATA = True
    FORMAT = "BBH"
    FIELDS = ("endpoint", "status", "length")
    endpoint: int
    status: int
    length: int
    data: bytes = b""

    def payload(self) -> bytes:
        """The data after the type header."""
        return self.data

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> IsoPacket:
        """The message from its type header and data."""
        v = cls.header_struct(neg).unpack(header)
        return cls(v[0], v[1], v[2], data)


@dataclass(frozen=True)
class InterruptPacket(UsbRedirMessage):
    """interrupt_packet: OUT data from the guest (status reply without data), IN data from the host."""

    TYPE = MsgType.INTERRUPT_PACKET
    SENDER = BOTH
    HAS_DATA = True
    FORMAT = "BBH"
    FIELDS = ("endpoint", "status", "length")
    endpoint: int
    status: int
    length: int
    data: bytes = b""

    def payload(self) -> bytes:
        """The data after the type header."""
        return self.data

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> InterruptPacket:
        """The message from its type header and data."""
        v = cls.header_struct(neg).unpack(header)
        return cls(v[0], v[1], v[2], data)


@dataclass(frozen=True)
class BufferedBulkPacket(UsbRedirMessage):
    """buffered_bulk_packet: IN data of a bulk_receiving stream (host to guest only)."""

    TYPE = MsgType.BUFFERED_BULK_PACKET
    SENDER = HOST
    HAS_DATA = True
    FORMAT = "IIBB"
    FIELDS = ("stream_id", "length", "endpoint", "status")
    stream_id: int
    length: int
    endpoint: int
    status: int
    data: bytes = b""

    def payload(self) -> bytes:
        """The data after the type header."""
        return self.data

    @classmethod
    def from_header(cls, header: bytes, data: bytes, neg: Negotiated) -> BufferedBulkPacket:
        """The message from its type header and data."""
        v = cls.header_struct(neg).unpack(header)
        return cls(v[0], v[1], v[2], v[3], data)


#: packet type -> message class, every type usbredir 0.13 defines (0..27, 100..104)
MESSAGE_CLASSES: dict[int, type[UsbRedirMessage]] = {cls.TYPE: cls for cls in UsbRedirMessage.__subclasses__()}
