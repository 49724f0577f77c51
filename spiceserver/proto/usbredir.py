"""The usbredir protocol, sans-IO: a connection fed bytes that returns typed packets, and packs them.

Counterpart of usbredir ``usbredirparser/usbredirparser.c`` (framing, caps, the per-type checks)
and ``usbredirfilter.c`` (filter strings), per ``docs/usb-redirection-protocol.txt``; this server
plays the usb-guest (QEMU ``hw/usb/redirect.c``), the tests also play the usb-host (spice-gtk's
usbredirhost). The messages themselves are :mod:`spiceserver.proto.usbredir_messages`.

Theory of operation
-------------------

``conn = UsbRedirConnection(GUEST)`` queues our hello at once (``conn.data_to_send()``): hello always
travels with the 32-bit-id header, before either side knows the other's caps. Then:

* :meth:`UsbRedirConnection.receive_data` takes bytes and returns complete :class:`Packet` s
  (``id``, ``msg``). The peer's hello must come first and only once. A cap counts when both hellos
  have it (:meth:`~UsbRedirConnection.both_have`): the header id is 64-bit after the peer's hello when
  both have ``64bits_ids``, and device_connect, ep_info and bulk_packet take the sizes of
  :class:`~spiceserver.proto.usbredir_messages.Negotiated`.
* :meth:`UsbRedirConnection.send` packs a message (ValueError for a message we may not send: wrong
  direction, a cap the peer lacks, bad data length) and queues it for ``data_to_send``.

Checks on receive, each a :class:`~spiceserver.errors.ProtocolError` (the channel closes the client):
an unknown type, a type only our own role may send, a length under the type header or with data
for a type that carries none, a length over ``max_packet`` (default :data:`MAX_PACKET`, 64 MiB plus
1 KiB of headers; libusbredirparser allows 128 MiB, QEMU never asks for more than a few MiB) checked
from the 12/16 header bytes before anything is buffered, interface_count over 32, interrupt /
bulk-receiving messages on an OUT endpoint, filter and disconnect_ack and bulk_receiving messages
without the cap, and data packets whose data does not match their direction (data comes with OUT
requests and IN replies, its length equal to the header's; no data the other way; iso and buffered
bulk never go the wrong way). Trailing bytes are never accepted: a usbredir length is exact.

Filter strings (:func:`parse_filter`, :func:`filter_to_string`, :func:`check_filter`) follow
``usbredirfilter.c``: rules ``class,vendor,product,version,allow`` separated by ``|``, each number
``strtol(…, 0)`` (decimal, ``0x`` hex, leading-0 octal, ``-1`` for any).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..errors import ProtocolError
from . import usbredir_messages as m
from .usbredir_messages import GUEST, HOST, Cap, Negotiated, UsbRedirMessage

__all__ = [
    "UsbRedirConnection",
    "Packet",
    "FilterRule",
    "parse_filter",
    "filter_to_string",
    "check_filter",
    "GUEST",
    "HOST",
    "GUEST_CAPS",
    "HOST_CAPS",
    "MAX_PACKET",
    "caps_mask",
]

#: the largest packet accepted (header length field: type header + data)
MAX_PACKET = (64 << 20) + 1024
#: the largest data length a sent bulk packet may announce (libusbredirparser MAX_BULK_TRANSFER_SIZE)
MAX_BULK_TRANSFER = 128 << 20


def caps_mask(*caps: int) -> int:
    """The caps word with these bits set."""
    word = 0
    for cap in caps:
        word |= 1 << cap
    return word


#: the usb-guest's caps, as QEMU's usb-redir (no bulk streams) plus device_disconnect_ack
GUEST_CAPS = caps_mask(
    Cap.CONNECT_DEVICE_VERSION,
    Cap.FILTER,
    Cap.DEVICE_DISCONNECT_ACK,
    Cap.EP_INFO_MAX_PACKET_SIZE,
    Cap.IDS_64BITS,
    Cap.BULK_LENGTH_32BITS,
    Cap.BULK_RECEIVING,
)
#: the usb-host's caps in the tests: every cap but bulk streams (spice-gtk announces 0xff)
HOST_CAPS = GUEST_CAPS

_HEADER32 = struct.Struct("<III")
_HEADER64 = struct.Struct("<IIQ")

#: data packets: the direction rules of usbredirparser_verify_type_header
_DATA_PACKETS = (m.ControlPacket, m.BulkPacket, m.IsoPacket, m.InterruptPacket, m.BufferedBulkPacket)


@dataclass(frozen=True)
class Packet:
    """One usbredir packet: its header id and its message."""

    id: int
    msg: UsbRedirMessage


class UsbRedirConnection:
    """One end of a usbredir connection (see the module docstring).

    Args:
        role: :data:`GUEST` (this server) or :data:`HOST` (the tests' fake client).
        version: our hello's version string (at most 63 bytes are sent).
        caps: our caps word (:data:`GUEST_CAPS` / :data:`HOST_CAPS` by default).
        max_packet: the largest packet length accepted from the peer.
    """

    def __init__(
        self, role: int, version: str = "spiceserver", caps: int | None = None, max_packet: int = MAX_PACKET
    ) -> None:
        if role not in (GUEST, HOST):
            raise ValueError("role is GUEST or HOST")
        self.role = role
        self.peer_role = HOST if role == GUEST else GUEST
        self.caps = (GUEST_CAPS if role == GUEST else HOST_CAPS) if caps is None else caps
        self.max_packet = max_packet
        #: the peer's hello arrived
        self.have_peer_caps = False
        self.peer_caps = 0
        self.peer_version = ""
        self._buf = bytearray()
        self._out = bytearray()
        self._neg = Negotiated()
        self._send_raw(m.Hello(version, self.caps), 0)

    # --- caps -------------------------------------------------------------------------------------

    def has_cap(self, cap: int) -> bool:
        """We announced ``cap``."""
        return bool(self.caps >> cap & 1)

    def peer_has_cap(self, cap: int) -> bool:
        """The peer announced ``cap`` (False until its hello)."""
        return bool(self.peer_caps >> cap & 1)

    def both_have(self, cap: int) -> bool:
        """Both hellos have ``cap``."""
        return self.has_cap(cap) and self.peer_has_cap(cap)

    @property
    def ids_64bit(self) -> bool:
        """Packet ids are 64-bit (both peers have 64bits_ids)."""
        return self.both_have(Cap.IDS_64BITS)

    @property
    def negotiated(self) -> Negotiated:
        """The caps that change struct sizes."""
        return self._neg

    def _header(self) -> struct.Struct:
        return _HEADER64 if self.ids_64bit else _HEADER32

    # --- sending ----------------------------------------------------------------------------------

    def send(self, msg: UsbRedirMessage, id: int = 0) -> None:
        """Pack ``msg`` with ``id`` and queue it for :meth:`data_to_send`.

        Raises:
            ValueError: a message our role may not send, one the peer's caps forbid, a field out
                of range, or data that does not match the packet's direction and length.
        """
        if isinstance(msg, m.Hello):
            raise ValueError("hello is sent once, by the constructor")
        if not msg.SENDER & self.role:
            raise ValueError(f"{type(msg).__name__} is not sent by this role")
        problem = self._verify(msg, sending=True)
        if problem:
            raise ValueError(problem)
        self._send_raw(msg, id)

    def _send_raw(self, msg: UsbRedirMessage, id: int) -> None:
        header = msg.pack_header(self._neg)
        data = msg.payload()
        length = len(header) + len(data)
        if not self.ids_64bit:
            id &= 0xFFFFFFFF
        self._out += self._header().pack(msg.TYPE, length, id) + header + data

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer (emptied)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Packet]:
        """Feed bytes from the peer; return the packets they complete.

        Raises:
            ProtocolError: malformed input (see the module docstring); the connection is unusable after.
        """
        self._buf += data
        out: list[Packet] = []
        while True:
            header = self._header()
            if len(self._buf) < header.size:
                return out
            mtype, length, id = header.unpack_from(self._buf)
            cls = m.MESSAGE_CLASSES.get(mtype)
            if cls is None:
                raise ProtocolError(f"usbredir: unknown packet type {mtype}")
            if not cls.SENDER & self.peer_role:
                raise ProtocolError(f"usbredir: {cls.TYPE.name.lower()} may not be sent by the peer's role")
            if not self.have_peer_caps and cls is not m.Hello:
                raise ProtocolError(f"usbredir: {cls.TYPE.name.lower()} before hello")
            if self.have_peer_caps and cls is m.Hello:
                raise ProtocolError("usbredir: second hello")
            if length > self.max_packet:
                raise ProtocolError(f"usbredir: packet length {length} over {self.max_packet}")
            hsize = cls.header_struct(self._neg).size
            if length < hsize or (length > hsize and not cls.HAS_DATA):
                raise ProtocolError(f"usbredir: {cls.TYPE.name.lower()} of length {length} (type header {hsize})")
            if len(self._buf) < header.size + length:
                return out
            start = header.size
            raw = bytes(self._buf[start : start + length])
            del self._buf[: start + length]
            try:
                msg = cls.from_header(raw[:hsize], raw[hsize:], self._neg)
            except (ValueError, struct.error) as exc:
                raise ProtocolError(f"usbredir: {cls.TYPE.name.lower()}: {exc}") from None
            problem = self._verify(msg, sending=False)
            if problem:
                raise ProtocolError(f"usbredir: {problem}")
            if isinstance(msg, m.Hello):
                self._take_hello(msg)
            out.append(Packet(id, msg))

    def _take_hello(self, hello: m.Hello) -> None:
        self.have_peer_caps = True
        self.peer_version = hello.version
        caps = hello.caps
        if caps >> Cap.BULK_STREAMS & 1 and not caps >> Cap.EP_INFO_MAX_PACKET_SIZE & 1:
            caps &= ~(1 << Cap.BULK_STREAMS)  # usbredirparser_verify_caps drops it too
        self.peer_caps = caps
        self._neg = Negotiated(
            device_version=self.both_have(Cap.CONNECT_DEVICE_VERSION),
            ep_max_packet_size=self.both_have(Cap.EP_INFO_MAX_PACKET_SIZE),
            bulk_streams=self.both_have(Cap.BULK_STREAMS),
            bulk_length_32=self.both_have(Cap.BULK_LENGTH_32BITS),
        )

    # --- checks shared by both directions (usbredirparser_verify_type_header) ----------------------

    def _cap_for(self, cap: int, sending: bool) -> bool:
        return self.peer_has_cap(cap) if sending else self.has_cap(cap)

    def _verify(self, msg: UsbRedirMessage, sending: bool) -> str | None:
        name = msg.TYPE.name.lower()
        if isinstance(msg, (m.FilterReject, m.FilterFilter)) and not self._cap_for(Cap.FILTER, sending):
            return f"{name} without cap filter"
        if isinstance(msg, m.DeviceDisconnectAck) and not self._cap_for(Cap.DEVICE_DISCONNECT_ACK, sending):
            return f"{name} without cap device_disconnect_ack"
        bulk_recv = (m.StartBulkReceiving, m.StopBulkReceiving, m.BulkReceivingStatus, m.BufferedBulkPacket)
        if isinstance(msg, bulk_recv) and not self._cap_for(Cap.BULK_RECEIVING, sending):
            return f"{name} without cap bulk_receiving"
        if (
            isinstance(
                msg,
                (
                    m.StartInterruptReceiving,
                    m.StopInterruptReceiving,
                    m.InterruptReceivingStatus,
                    m.StartBulkReceiving,
                    m.StopBulkReceiving,
                    m.BulkReceivingStatus,
                ),
            )
            and not msg.endpoint & 0x80
        ):
            return f"{name} on OUT endpoint {msg.endpoint:#04x}"
        if isinstance(msg, m.StartBulkReceiving) and msg.bytes_per_transfer > MAX_BULK_TRANSFER:
            return f"{name}: bytes_per_transfer {msg.bytes_per_transfer} over {MAX_BULK_TRANSFER}"
        if isinstance(msg, m.FilterFilter) and sending:
            try:
                parse_filter(msg.rules)
            except ValueError as exc:
                return f"{name}: {exc}"
        if isinstance(msg, _DATA_PACKETS):
            return self._verify_data(msg, sending)
        return None

    def _verify_data(
        self,
        msg: m.ControlPacket | m.BulkPacket | m.IsoPacket | m.InterruptPacket | m.BufferedBulkPacket,
        sending: bool,
    ) -> str | None:
        name = msg.TYPE.name.lower()
        if isinstance(msg, (m.BulkPacket, m.BufferedBulkPacket)) and msg.length > MAX_BULK_TRANSFER:
            return f"{name}: length {msg.length} over {MAX_BULK_TRANSFER}"
        sender = self.role if sending else self.peer_role
        is_in = bool(msg.endpoint & 0x80)
        # data travels with OUT requests (guest -> host) and IN replies (host -> guest)
        with_data = is_in if sender == HOST else not is_in
        if with_data:
            if len(msg.data) != msg.length:
                return f"{name}: {len(msg.data)} data bytes, header length {msg.length} (endpoint {msg.endpoint:#04x})"
            return None
        if msg.data:
            return f"{name}: unexpected data (endpoint {msg.endpoint:#04x})"
        if isinstance(msg, (m.IsoPacket, m.BufferedBulkPacket)):
            return f"{name} in the wrong direction (endpoint {msg.endpoint:#04x})"
        if isinstance(msg, m.InterruptPacket) and sender == GUEST:
            return f"{name} in the wrong direction (endpoint {msg.endpoint:#04x}: use start_interrupt_receiving)"
        return None


# --- filter rules (usbredirfilter.c) ------------------------------------------------------------------


@dataclass(frozen=True)
class FilterRule:
    """One usbredirfilter rule; -1 matches any value."""

    device_class: int = -1
    vendor_id: int = -1
    product_id: int = -1
    device_version_bcd: int = -1
    allow: bool = True

    def __post_init__(self) -> None:
        for name, top in (
            ("device_class", 255),
            ("vendor_id", 0xFFFF),
            ("product_id", 0xFFFF),
            ("device_version_bcd", 0xFFFF),
        ):
            value = getattr(self, name)
            if not -1 <= value <= top:
                raise ValueError(f"filter rule {name} {value} out of -1..{top}")


_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")


def _strtol(token: str) -> int:
    match = _STRTOL.match(token)
    if match is None:
        raise ValueError(f"filter value {token!r} is not a number")
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if sign == "-" else value


def parse_filter(text: str, token_sep: str = ",", rule_sep: str = "|") -> tuple[FilterRule, ...]:
    """Rules from a usbredirfilter string (``usbredirfilter_string_to_rules``).

    Separators are character sets, as strtok's: empty rules and empty fields are skipped.

    Raises:
        ValueError: a rule without exactly five numbers, or a value out of range.
    """
    rules = []
    for rule in re.split("[" + re.escape(rule_sep) + "]", text):
        if not rule:
            continue
        tokens = [t for t in re.split("[" + re.escape(token_sep) + "]", rule) if t]
        if len(tokens) != 5:
            raise ValueError(f"filter rule {rule!r}: {len(tokens)} fields, not 5")
        c, v, p, b, allow = (_strtol(t) for t in tokens)
        if not -(1 << 31) <= allow < (1 << 31):
            raise ValueError(f"filter rule {rule!r}: allow out of range")
        rules.append(FilterRule(c, v, p, b, allow != 0))
    return tuple(rules)


def filter_to_string(
    rules: tuple[FilterRule, ...] | list[FilterRule], token_sep: str = ",", rule_sep: str = "|"
) -> str:
    """The usbredirfilter string of ``rules`` (``usbredirfilter_rules_to_string``: hex fields, a
    trailing rule separator)."""
    out = []
    for r in rules:
        fields = [
            "-1" if r.device_class == -1 else f"0x{r.device_class:02x}",
            "-1" if r.vendor_id == -1 else f"0x{r.vendor_id:04x}",
            "-1" if r.product_id == -1 else f"0x{r.product_id:04x}",
            "-1" if r.device_version_bcd == -1 else f"0x{r.device_version_bcd:04x}",
            "1" if r.allow else "0",
        ]
        out.append(token_sep[0].join(fields))
    return rule_sep[0].join(out)


#: check_filter results (usbredirfilter_check: 0, -EPERM, -ENOENT)
FILTER_ALLOW = 0
FILTER_DENY = -1
FILTER_NO_MATCH = -2


def _check1(rules: tuple[FilterRule, ...], cls: int, vid: int, pid: int, bcd: int, default_allow: bool) -> int:
    for r in rules:
        if (
            r.device_class in (-1, cls)
            and r.vendor_id in (-1, vid)
            and r.product_id in (-1, pid)
            and r.device_version_bcd in (-1, bcd)
        ):
            return FILTER_ALLOW if r.allow else FILTER_DENY
    return FILTER_ALLOW if default_allow else FILTER_NO_MATCH


def check_filter(
    rules: tuple[FilterRule, ...],
    device_class: int,
    interfaces: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...],
    vendor_id: int,
    product_id: int,
    device_version_bcd: int,
    default_allow: bool = False,
    dont_skip_non_boot_hid: bool = False,
) -> int:
    """Whether a device passes ``rules`` (``usbredirfilter_check``).

    Args:
        rules: the rules.
        device_class: bDeviceClass (0x00 and 0xef skip the device pass).
        interfaces: (class, subclass, protocol) per interface.
        vendor_id: idVendor.
        product_id: idProduct.
        device_version_bcd: bcdDevice.
        default_allow: a pass no rule matches allows (usbredirfilter_fl_default_allow).
        dont_skip_non_boot_hid: check 03/00/00 interfaces of multi-interface devices too.

    Returns:
        :data:`FILTER_ALLOW` (0), :data:`FILTER_DENY` (a deny rule matched) or :data:`FILTER_NO_MATCH`.
    """
    if device_class not in (0x00, 0xEF):
        rc = _check1(rules, device_class, vendor_id, product_id, device_version_bcd, default_allow)
        if rc:
            return rc
    skipped = 0
    for cls, sub, proto in interfaces:
        if not dont_skip_non_boot_hid and len(interfaces) > 1 and (cls, sub, proto) == (0x03, 0x00, 0x00):
            skipped += 1
            continue
        rc = _check1(rules, cls, vendor_id, product_id, device_version_bcd, default_allow)
        if rc:
            return rc
    if interfaces and skipped == len(interfaces):
        return check_filter(
            rules, device_class, interfaces, vendor_id, product_id, device_version_bcd, default_allow, True
        )
    return FILTER_ALLOW
