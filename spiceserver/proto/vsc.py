"""libcacard's VSCard messages (the smartcard channel's payload and QEMU's ccid-card-passthru framing).

Counterpart of libcacard ``src/vscard_common.h`` (the header and the message structs), of the
parsing in spice ``server/smartcard.cpp`` / ``smartcard-channel-client.cpp`` and of QEMU
``hw/usb/ccid-card-passthru.c``. Sans-IO: bytes in, typed messages out, and back.

Every message is a header ``{u32 type, u32 reader_id, u32 length}`` followed by ``length`` bytes of
payload. The byte order depends on where the message travels:

* on the SPICE wire (SMARTCARD_DATA, both directions) it is **little-endian**
  (:data:`LITTLE`): spice-gtk and libspice use host order there;
* on the char device toward QEMU's ccid-card-passthru it is **network order** (:data:`NETWORK`):
  libspice converts with ``htonl`` / ``ntohl``.

The payload's integers (Error's code, Init's version and caps) follow the header's order. Init's
magic is the four bytes ``"VSCD"`` in both orders. ReaderAdd's name is not NUL-terminated.

Payloads: Init ``{magic, u32 version, u32 caps[]}``; Error ``{u32 code}``; ReaderAdd the name;
ATR the card's answer to reset; APDU a command or a response; ReaderRemove, CardRemove, Flush and
FlushComplete nothing. Bytes after what a payload needs are accepted and ignored (as libspice and
QEMU do); a short Init or Error is a :class:`~spiceserver.errors.ProtocolError`. Types outside
1..9 decode to :class:`VscUnknown` (libspice logs and ignores them).

:class:`VscReader` cuts a byte stream into messages with a size bound checked on the header,
before any payload is buffered (libspice grows its buffer to any announced length; QEMU drops the
connection past 64 KiB: :data:`MAX_PAYLOAD` is that bound).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Literal

from ..errors import ProtocolError
from .enums import VscMessageType

__all__ = [
    "APDU_BUF_SIZE",
    "HEADER_SIZE",
    "LITTLE",
    "MAGIC",
    "MAX_PAYLOAD",
    "NETWORK",
    "UNDEFINED_READER_ID",
    "VERSION",
    "ByteOrder",
    "VscApdu",
    "VscAtr",
    "VscCardRemove",
    "VscError",
    "VscErrorCode",
    "VscFlush",
    "VscFlushComplete",
    "VscInit",
    "VscMessage",
    "VscMessageType",
    "VscReader",
    "VscReaderAdd",
    "VscReaderRemove",
    "VscUnknown",
    "decode",
    "pack",
    "parse",
    "type_of",
]

ByteOrder = Literal["little", "big"]
#: the SPICE wire's order (SMARTCARD_DATA)
LITTLE: ByteOrder = "little"
#: the char device's order (QEMU ccid-card-passthru)
NETWORK: ByteOrder = "big"

#: ``sizeof(VSCMsgHeader)``
HEADER_SIZE = 12
#: the largest payload accepted (QEMU ccid-card-passthru ``VSCARD_IN_SIZE``, 64 KiB)
MAX_PAYLOAD = 64 * 1024
#: libspice / spice-gtk ``APDUBufSize``: the longest APDU they expect (informative)
APDU_BUF_SIZE = 270
#: ``VSCARD_UNDEFINED_READER_ID``: a reader the server gave no id yet, or no reader
UNDEFINED_READER_ID = 0xFFFFFFFF
#: ``VSCARD_MAGIC``: Init's first four bytes
MAGIC = b"VSCD"
#: ``VSCARD_VERSION`` = MAKE_VERSION(0, 0, 2) (major 11 bits, middle 11, minor 10)
VERSION = 2


class VscErrorCode(IntEnum):
    """``VSCErrorCode``: the code of an Error message (SUCCESS is the acknowledgement)."""

    SUCCESS = 0
    GENERAL_ERROR = 1
    CANNOT_ADD_MORE_READERS = 2
    CARD_ALREADY_INSERTED = 3


def _fmt(order: ByteOrder) -> str:
    return "<" if order == LITTLE else ">"


@dataclass(frozen=True)
class VscMessage:
    """A VSCard message: its type (class attribute ``TYPE``) and the reader it is about."""

    TYPE: ClassVar[int]
    reader_id: int = UNDEFINED_READER_ID

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes (what follows the header) in ``order``."""
        return b""

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscMessage:
        """The message of this type with that payload (payload-less types ignore ``data``)."""
        return cls(reader_id)


@dataclass(frozen=True)
class VscInit(VscMessage):
    """Init (1): ``magic``, ``version`` and ``caps`` (the device's first message; libspice swallows it)."""

    TYPE: ClassVar[int] = VscMessageType.INIT
    magic: bytes = MAGIC
    version: int = VERSION
    caps: tuple[int, ...] = (0,)

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        fmt = _fmt(order)
        return self.magic[:4].ljust(4, b"\0") + struct.pack(f"{fmt}I{len(self.caps)}I", self.version, *self.caps)

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscInit:
        """The message with payload ``data``."""
        if len(data) < 8:
            raise ProtocolError(f"VSC Init of {len(data)} bytes (at least 8: magic, version)")
        fmt = _fmt(order)
        (version,) = struct.unpack_from(f"{fmt}I", data, 4)
        ncaps = (len(data) - 8) // 4
        caps = struct.unpack_from(f"{fmt}{ncaps}I", data, 8)
        return cls(reader_id, bytes(data[:4]), version, tuple(caps))


@dataclass(frozen=True)
class VscError(VscMessage):
    """Error (2): ``code`` (:class:`VscErrorCode`; SUCCESS acknowledges the previous message)."""

    TYPE: ClassVar[int] = VscMessageType.ERROR
    code: int = VscErrorCode.SUCCESS

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        return struct.pack(f"{_fmt(order)}I", self.code)

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscError:
        """The message with payload ``data``."""
        if len(data) < 4:
            raise ProtocolError(f"VSC Error of {len(data)} bytes (4 needed)")
        (code,) = struct.unpack_from(f"{_fmt(order)}I", data)
        return cls(reader_id, code)


@dataclass(frozen=True)
class VscReaderAdd(VscMessage):
    """ReaderAdd (3): a client reader appeared; ``name`` (not NUL-terminated). The client sends
    it with :data:`UNDEFINED_READER_ID`; the id comes back in the Error that acknowledges it."""

    TYPE: ClassVar[int] = VscMessageType.READER_ADD
    name: bytes = b""

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        return self.name

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscReaderAdd:
        """The message with payload ``data``."""
        return cls(reader_id, bytes(data))

    @property
    def text(self) -> str:
        """The name as text (UTF-8, bad bytes replaced, trailing NULs dropped)."""
        return self.name.rstrip(b"\0").decode("utf-8", "replace")


@dataclass(frozen=True)
class VscReaderRemove(VscMessage):
    """ReaderRemove (4): the reader went away."""

    TYPE: ClassVar[int] = VscMessageType.READER_REMOVE


@dataclass(frozen=True)
class VscAtr(VscMessage):
    """ATR (5): a card was inserted; ``atr`` is its answer to reset."""

    TYPE: ClassVar[int] = VscMessageType.ATR
    atr: bytes = b""

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        return self.atr

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscAtr:
        """The message with payload ``data``."""
        return cls(reader_id, bytes(data))


@dataclass(frozen=True)
class VscCardRemove(VscMessage):
    """CardRemove (6): the card was taken out."""

    TYPE: ClassVar[int] = VscMessageType.CARD_REMOVE


@dataclass(frozen=True)
class VscApdu(VscMessage):
    """APDU (7): a command toward the card, or the card's response (``data``)."""

    TYPE: ClassVar[int] = VscMessageType.APDU
    data: bytes = b""

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        return self.data

    @classmethod
    def from_payload(cls, reader_id: int, data: bytes, order: ByteOrder) -> VscApdu:
        """The message with payload ``data``."""
        return cls(reader_id, bytes(data))


@dataclass(frozen=True)
class VscFlush(VscMessage):
    """Flush (8) (no payload; unused by spice-gtk and QEMU)."""

    TYPE: ClassVar[int] = VscMessageType.FLUSH


@dataclass(frozen=True)
class VscFlushComplete(VscMessage):
    """FlushComplete (9) (no payload; unused by spice-gtk and QEMU)."""

    TYPE: ClassVar[int] = VscMessageType.FLUSH_COMPLETE


@dataclass(frozen=True)
class VscUnknown(VscMessage):
    """A type outside 1..9, kept as it came (``msg_type``, ``data``)."""

    TYPE: ClassVar[int] = 0
    msg_type: int = 0
    data: bytes = b""

    def payload(self, order: ByteOrder) -> bytes:
        """The payload bytes in ``order``."""
        return self.data


_TYPES: dict[int, type[VscMessage]] = {
    cls.TYPE: cls
    for cls in (
        VscInit,
        VscError,
        VscReaderAdd,
        VscReaderRemove,
        VscAtr,
        VscCardRemove,
        VscApdu,
        VscFlush,
        VscFlushComplete,
    )
}


def type_of(msg: VscMessage) -> int:
    """The message's type number (:class:`VscUnknown` keeps its own)."""
    return msg.msg_type if isinstance(msg, VscUnknown) else msg.TYPE


def decode(msg_type: int, reader_id: int, data: bytes, order: ByteOrder) -> VscMessage:
    """The message of a header's ``msg_type`` and ``reader_id`` with payload ``data``.

    Raises:
        ProtocolError: a payload too short for its type, or over :data:`MAX_PAYLOAD`.
    """
    if len(data) > MAX_PAYLOAD:
        raise ProtocolError(f"VSC message of {len(data)} bytes (at most {MAX_PAYLOAD})")
    cls = _TYPES.get(msg_type)
    if cls is None:
        return VscUnknown(reader_id, msg_type, bytes(data))
    return cls.from_payload(reader_id, bytes(data), order)


def pack(msg: VscMessage, order: ByteOrder) -> bytes:
    """Header plus payload of ``msg`` in ``order``."""
    payload = msg.payload(order)
    return struct.pack(f"{_fmt(order)}III", type_of(msg), msg.reader_id, len(payload)) + payload


def parse(data: bytes, order: ByteOrder) -> VscMessage:
    """One whole message (header and payload; bytes after the payload are ignored).

    Raises:
        ProtocolError: short input, an announced length over :data:`MAX_PAYLOAD` or past the
            data, or a bad payload.
    """
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"VSC message of {len(data)} bytes (header is {HEADER_SIZE})")
    msg_type, reader_id, length = struct.unpack_from(f"{_fmt(order)}III", data)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"VSC message announces {length} bytes (at most {MAX_PAYLOAD})")
    if HEADER_SIZE + length > len(data):
        raise ProtocolError(f"VSC message announces {length} bytes, {len(data) - HEADER_SIZE} present")
    return decode(msg_type, reader_id, data[HEADER_SIZE : HEADER_SIZE + length], order)


class VscReader:
    """Cut a byte stream (a char device's) into VSC messages.

    Args:
        order: the stream's byte order (:data:`NETWORK` for ccid-card-passthru).
        max_payload: the largest payload accepted; a header announcing more raises before
            anything of it is buffered.

    After a :class:`~spiceserver.errors.ProtocolError` the stream cannot be resynchronised: the
    reader refuses every further :meth:`feed` until :meth:`reset`.
    """

    def __init__(self, order: ByteOrder, max_payload: int = MAX_PAYLOAD) -> None:
        self.order = order
        self.max_payload = max_payload
        self._buf = bytearray()
        self._failed: str | None = None
        self._fmt = f"{_fmt(order)}III"

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget what is buffered and any failure (a new peer opened the device)."""
        self._buf.clear()
        self._failed = None

    def feed(self, data: bytes) -> list[VscMessage]:
        """The messages completed by ``data``, in order.

        Raises:
            ProtocolError: an announced length over ``max_payload``, a bad payload, or an
                earlier failure.
        """
        if self._failed is not None:
            raise ProtocolError(f"VSC stream failed earlier: {self._failed}")
        out: list[VscMessage] = []
        buf = self._buf
        view = memoryview(data)
        pos = 0
        try:
            while True:
                if len(buf) < HEADER_SIZE:
                    take = min(HEADER_SIZE - len(buf), len(view) - pos)
                    buf += view[pos : pos + take]
                    pos += take
                    if len(buf) < HEADER_SIZE:
                        break
                msg_type, reader_id, length = struct.unpack_from(self._fmt, buf)
                if length > self.max_payload:
                    raise ProtocolError(
                        f"VSC message (type {msg_type}) announces {length} bytes (at most {self.max_payload})"
                    )
                need = HEADER_SIZE + length - len(buf)
                take = min(need, len(view) - pos)
                buf += view[pos : pos + take]
                pos += take
                if len(buf) < HEADER_SIZE + length:
                    break
                out.append(decode(msg_type, reader_id, bytes(buf[HEADER_SIZE:]), self.order))
                buf.clear()
        except ProtocolError as exc:
            self._failed = exc.reason
            buf.clear()
            raise
        return out
