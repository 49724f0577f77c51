"""Data-message framing: full and mini headers, sub-message lists, a bounded incremental framer.

Counterpart of spice-common ``spice/protocol.h`` (``SpiceDataHeader``, ``SpiceMiniDataHeader``,
``SpiceSubMessageList``) and of the header handling in spice ``server/red-channel-client.cpp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "FULL_HEADER",
    "MINI_HEADER",
    "RawMessage",
    "Framer",
    "frame",
    "split_sub_list",
    "encode_sub_list",
    "MSG_LIST",
]

FULL_HEADER = struct.Struct("<QHII")  # serial, type, size, sub_list
MINI_HEADER = struct.Struct("<HI")  # type, size
MSG_LIST = 8  # SPICE_MSG_LIST: the body is a sub-message list (mini-header channels)
_SUB_HEADER = struct.Struct("<HI")

#: default limit on one incoming message body; clients send nothing larger than agent data chunks
#: and record audio frames, far below this (libspice uses per-channel receive buffers of 64 KiB+).
DEFAULT_MAX_MESSAGE = 1 << 20


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One framed message before its body is parsed."""

    type: int
    body: bytes
    serial: int = 0  # 0 when the mini header is in use


class Framer:
    """Splits an incoming byte stream into :class:`RawMessage` records.

    Args:
        mini: whether the mini header (6 bytes) is in use, else the full header (18 bytes).
        max_size: the largest body accepted; a larger size in a header raises ProtocolError before
            any of the body is buffered.
    """

    def __init__(self, mini: bool, max_size: int = DEFAULT_MAX_MESSAGE) -> None:
        self.mini = mini
        self.max_size = max_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Number of bytes received and not framed yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawMessage]:
        """Add bytes; return every message now complete (sub-message lists are expanded)."""
        self._buf += data
        out: list[RawMessage] = []
        hdr = MINI_HEADER if self.mini else FULL_HEADER
        while len(self._buf) >= hdr.size:
            if self.mini:
                type_, size = MINI_HEADER.unpack_from(self._buf)
                serial, sub_list = 0, 0
            else:
                serial, type_, size, sub_list = FULL_HEADER.unpack_from(self._buf)
            if size > self.max_size:
                raise ProtocolError(f"message type {type_} of {size} bytes exceeds the {self.max_size}-byte limit")
            if len(self._buf) < hdr.size + size:
                break
            body = bytes(self._buf[hdr.size : hdr.size + size])
            del self._buf[: hdr.size + size]
            if sub_list:
                out.extend(RawMessage(t, b, serial) for t, b in split_sub_list(body, sub_list))
                out.append(RawMessage(type_, body[:sub_list], serial))
            elif self.mini and type_ == MSG_LIST:
                out.extend(RawMessage(t, b) for t, b in split_sub_list(body, 0))
            else:
                out.append(RawMessage(type_, body, serial))
        return out


def frame(type_: int, body: bytes, *, mini: bool, serial: int = 0) -> bytes:
    """Prefix ``body`` with a mini or full header."""
    if mini:
        return MINI_HEADER.pack(type_, len(body)) + body
    return FULL_HEADER.pack(serial, type_, len(body), 0) + body


def split_sub_list(body: bytes, offset: int) -> list[tuple[int, bytes]]:
    """Parse a ``SpiceSubMessageList`` at ``offset``: {u16 count, u32 offsets[]} -> [(type, body)].

    Each offset counts from the start of ``body`` (spice-gtk ``spice_channel_recv_msg``).
    """
    try:
        (n,) = struct.unpack_from("<H", body, offset)
        offsets = struct.unpack_from(f"<{n}I", body, offset + 2)
        out = []
        for off in offsets:
            type_, size = _SUB_HEADER.unpack_from(body, off)
            start = off + _SUB_HEADER.size
            if start + size > len(body):
                raise ProtocolError("sub-message runs past its message")
            out.append((type_, body[start : start + size]))
        return out
    except struct.error:
        raise ProtocolError("truncated sub-message list") from None


def encode_sub_list(messages: list[tuple[int, bytes]], base: int = 0) -> bytes:
    """Build a sub-message list: the list header then each {type, size, body} it points at.

    Offsets count from the start of the enclosing message body; ``base`` is where the list will
    sit in it (0 for a SPICE_MSG_LIST body).
    """
    head = base + 2 + 4 * len(messages)
    offsets = []
    parts = []
    pos = head
    for type_, body in messages:
        offsets.append(pos)
        parts.append(_SUB_HEADER.pack(type_, len(body)) + body)
        pos += _SUB_HEADER.size + len(body)
    return struct.pack(f"<H{len(messages)}I", len(messages), *offsets) + b"".join(parts)
