"""Message registry, shared structures and the base-channel messages every channel carries.

Counterpart of spice-common ``spice.proto`` (``channel BaseChannel``, the shared structs) and of the
per-channel message tables in ``common/messages.h`` / the generated demarshallers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from ...errors import ProtocolError
from ..enums import ChannelType
from ..marshal import I16, I32, U8, U16, U32, U64, Array, Bytes, Reader, count, f, layout_of, marshal, struct

__all__ = [
    "SERVER",
    "CLIENT",
    "Direction",
    "Message",
    "message",
    "lookup",
    "parse_body",
    "encode_body",
    "Point",
    "Point16",
    "PointFix",
    "Rect",
    "Transform",
    "ChannelWait",
]

Direction = Literal["server", "client"]
SERVER: Direction = "server"  # sent by the server (SPICE_MSG_*)
CLIENT: Direction = "client"  # sent by the client (SPICE_MSGC_*)

#: channels whose message set extends another's (spice.proto ``channel X : Y``).
_PARENT: dict[int, int] = {
    ChannelType.USBREDIR: -1,  # -1 = SpicevmcChannel, not a real channel type
    ChannelType.PORT: -1,
    ChannelType.WEBDAV: ChannelType.PORT,
}
SPICEVMC = -1
BASE = 0

_REGISTRY: dict[tuple[int, Direction, int], type[Message]] = {}


class Message:
    """Base of every message class. Class attributes say where it belongs on the wire."""

    __slots__ = ()
    CHANNEL: ClassVar[int] = BASE
    DIRECTION: ClassVar[Direction] = SERVER
    TYPE: ClassVar[int] = 0

    def encode(self) -> bytes:
        """The message body as bytes."""
        return marshal(self)


M = TypeVar("M", bound=Message)


def message(channel: int, direction: Direction, type_: int) -> Callable[[type[M]], type[M]]:
    """Register a :func:`~spiceserver.proto.marshal.struct` class as message ``type_``.

    Args:
        channel: a ChannelType, ``BASE`` for the common messages, or ``SPICEVMC``.
        direction: SERVER for server-to-client messages, CLIENT for client-to-server.
        type_: the message type number.
    """

    def register(cls: type[M]) -> type[M]:
        key = (int(channel), direction, type_)
        if key in _REGISTRY:
            raise TypeError(f"message {key} registered twice ({_REGISTRY[key].__name__}, {cls.__name__})")
        cls.CHANNEL = int(channel)
        cls.DIRECTION = direction
        cls.TYPE = type_
        _REGISTRY[key] = cls
        return cls

    return register


def lookup(channel: int, direction: Direction, type_: int) -> type[Message] | None:
    """The message class for ``type_`` on ``channel`` (inherited and base messages included)."""
    ch: int | None = int(channel)
    while ch is not None:
        cls = _REGISTRY.get((ch, direction, type_))
        if cls is not None:
            return cls
        ch = _PARENT.get(ch, BASE) if ch != BASE else None
    return None


def messages_of(channel: int, direction: Direction) -> dict[int, type[Message]]:
    """Every message type number valid on ``channel`` in ``direction``, with its class."""
    chain = []
    ch: int | None = int(channel)
    while ch is not None:
        chain.append(ch)
        ch = _PARENT.get(ch, BASE) if ch != BASE else None
    out: dict[int, type[Message]] = {}
    for ch in reversed(chain):
        for (c, d, t), cls in _REGISTRY.items():
            if c == ch and d == direction:
                out[t] = cls
    return out


def parse_body(channel: int, direction: Direction, type_: int, body: bytes | bytearray | memoryview) -> Message:
    """Parse one message body; raises ProtocolError for unknown types or malformed bodies."""
    cls = lookup(channel, direction, type_)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_} on channel type {channel} ({direction})")
    try:
        value: Message = layout_of(cls).read(Reader(body), {})
    except RecursionError:
        raise ProtocolError("structure nested too deeply") from None
    return value


def encode_body(msg: Message) -> bytes:
    """Marshal a message body (same as ``msg.encode()``)."""
    return marshal(msg)


# --- shared structures -------------------------------------------------------------------------


@struct
class Point:
    x: int = f(I32)
    y: int = f(I32)


@struct
class Point16:
    x: int = f(I16)
    y: int = f(I16)


@struct
class PointFix:
    """Fixed-point 28.4 coordinates."""

    x: int = f(I32)
    y: int = f(I32)


@struct
class Rect:
    """A rectangle; on the wire top, left, bottom, right."""

    top: int = f(I32)
    left: int = f(I32)
    bottom: int = f(I32)
    right: int = f(I32)


@struct
class Transform:
    t00: int = f(U32)
    t01: int = f(U32)
    t02: int = f(U32)
    t10: int = f(U32)
    t11: int = f(U32)
    t12: int = f(U32)


@struct
class ChannelWait:
    channel_type: int = f(U8)
    channel_id: int = f(U8)
    message_serial: int = f(U64)


def _struct_array(cls: type, n: str | None = None) -> Any:
    return Array(layout_of(cls), n)


# --- base channel: server to client ------------------------------------------------------------


@message(BASE, SERVER, 1)
@struct
class Migrate(Message):
    flags: int = f(U32)


@message(BASE, SERVER, 2)
@struct
class MigrateData(Message):
    data: bytes = f(Bytes())


@message(BASE, SERVER, 3)
@struct
class SetAck(Message):
    generation: int = f(U32)
    window: int = f(U32)


@message(BASE, SERVER, 4)
@struct
class Ping(Message):
    id: int = f(U32)
    timestamp: int = f(U64)
    data: bytes = f(Bytes(), default=b"")


@message(BASE, SERVER, 5)
@struct
class WaitForChannels(Message):
    _n = count(U8, "wait_list")
    wait_list: tuple[ChannelWait, ...] = f(_struct_array(ChannelWait, "_n"))


@message(BASE, SERVER, 6)
@struct
class Disconnecting(Message):
    time_stamp: int = f(U64)
    reason: int = f(U32)


@message(BASE, SERVER, 7)
@struct
class Notify(Message):
    time_stamp: int = f(U64)
    severity: int = f(U32)
    visibility: int = f(U32)
    what: int = f(U32)
    _len = count(U32, "message")
    message: bytes = f(Bytes("_len"))
    #: what follows ``message``: libspice appends a NUL that ``message_len`` does not count.
    terminator: bytes = f(Bytes(), default=b"\0")


@message(BASE, SERVER, 8)
@struct
class List(Message):
    """SPICE_MSG_LIST: its body is a sub-message list (see :mod:`spiceserver.proto.wire`)."""

    data: bytes = f(Bytes())


# --- base channel: client to server ------------------------------------------------------------


@message(BASE, CLIENT, 1)
@struct
class AckSync(Message):
    generation: int = f(U32)


@message(BASE, CLIENT, 2)
@struct
class Ack(Message):
    pass


@message(BASE, CLIENT, 3)
@struct
class Pong(Message):
    id: int = f(U32)
    timestamp: int = f(U64)


@message(BASE, CLIENT, 4)
@struct
class MigrateFlushMark(Message):
    pass


@message(BASE, CLIENT, 5)
@struct
class ClientMigrateData(Message):
    data: bytes = f(Bytes())


@message(BASE, CLIENT, 6)
@struct
class ClientDisconnecting(Message):
    time_stamp: int = f(U64)
    reason: int = f(U32)


_ = U16  # re-exported width used by channel modules
